.PHONY: up test bootstrap lock lint format contracts bench clean

up: bootstrap ## run the whole stack (map on http://127.0.0.1:8000/)
	.venv/bin/ridehail up

test: ## install what is needed and run every test (not the benchmarks)
	scripts/test.sh

bootstrap: ## install uv, sync .venv exactly with uv.lock, install npm packages
	scripts/bootstrap.sh

lock: ## upgrade every Python dependency deliberately: re-resolve uv.lock, reinstall, regenerate contracts
	scripts/bootstrap.sh >/dev/null || true
	.tools/uv/bin/uv lock --upgrade
	scripts/bootstrap.sh
	.venv/bin/python scripts/generate_contracts.py

lint: ## ruff, import boundaries, types (what the test command checks first)
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports && .venv/bin/mypy

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

contracts: ## regenerate docs/events/*.schema.json and .env.example
	.venv/bin/python scripts/generate_contracts.py

bench: ## run every benchmark, results in docs/bench/
	scripts/bench_all.sh

clean:
	rm -rf .state test-artifacts .pytest_cache .tools
