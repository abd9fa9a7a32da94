"""docker-compose.yml is consistent: it parses, every service command is a real `ridehail`
subcommand, images are pinned, health gates start-up, and the whole stack fits in 2 GB; its
`cluster` profile is a replicated 3-node KRaft cluster (RF 3, min.insync.replicas=2) in 1.5 GB.
(No Docker engine runs here, so this checks the file, not containers.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ridehail.cli import app
from ridehail.common.settings import known_setting_names
from ridehail.paths import project_root

COMPOSE = project_root() / "docker-compose.yml"
COMPOSE_ENV = project_root() / "scripts" / "compose_env.sh"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _memory_mb(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([MG])", value)
    assert m, f"memory limit {value!r} should look like 256M or 1G"
    return float(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def _compose_config(env_file: Path, *extra: str, profile: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package) not installed; scripts/bootstrap.sh --test installs it")
    profile_args = ["--profile", profile] if profile else []
    command = [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *profile_args, "config", *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=project_root())


@pytest.mark.parametrize("profile", [None, "cluster"])
def test_docker_compose_config_validates_with_the_generated_secrets(tmp_path: Path, profile: str | None) -> None:
    env_file = tmp_path / ".env"
    subprocess.run([str(COMPOSE_ENV), str(env_file)], check=True, capture_output=True)
    result = _compose_config(env_file, "-q", profile=profile)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(_compose_config(env_file, profile=profile).stdout)
    password = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)[
        "POSTGRES_PASSWORD"
    ]
    assert rendered["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert f"ridehail:{password}@postgres" in rendered["services"]["auth"]["environment"]["RIDEHAIL_DATABASE_URL"]
    for name, svc in rendered["services"].items():  # every published port on loopback only
        for port in svc.get("ports", []):  # "127.0.0.1:8000:8000/tcp" (compose 1.x) or a mapping (2.x)
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":", 1)[0]
            assert host_ip == "127.0.0.1", (name, port)


def test_compose_refuses_to_start_without_a_generated_password(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    result = _compose_config(empty, "-q")
    assert result.returncode != 0 and "compose_env.sh" in result.stderr


def test_the_secrets_script_is_idempotent_and_keeps_what_is_there(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RIDEHAIL_DRIVERS=500")  # no newline at the end
    subprocess.run([str(COMPOSE_ENV), str(env_file)], check=True, capture_output=True)
    first = env_file.read_text()
    subprocess.run([str(COMPOSE_ENV), str(env_file)], check=True, capture_output=True)
    assert env_file.read_text() == first
    lines = first.splitlines()
    assert lines[0] == "RIDEHAIL_DRIVERS=500"
    [password] = [line.split("=", 1)[1] for line in lines if line.startswith("POSTGRES_PASSWORD=")]
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    other = tmp_path / "other.env"
    subprocess.run([str(COMPOSE_ENV), str(other)], check=True, capture_output=True)
    assert other.read_text() != first  # a fresh secret each time one is generated


def test_no_default_password_and_nothing_published_on_every_interface(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert "ridehail:ridehail@" not in text and "POSTGRES_PASSWORD: ridehail" not in text
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), (name, port)


def test_auth_trusts_exactly_the_gateways_address(compose: dict[str, Any]) -> None:
    gateway_ip = compose["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    assert compose["services"]["auth"]["environment"]["RIDEHAIL_TRUSTED_PROXIES"] == gateway_ip
    [pool] = compose["networks"]["default"]["ipam"]["config"]
    import ipaddress

    subnet, dynamic = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    assert ipaddress.ip_address(gateway_ip) in subnet and ipaddress.ip_address(gateway_ip) not in dynamic


def test_every_app_command_is_a_real_ridehail_subcommand(compose: dict[str, Any]) -> None:
    runner = CliRunner()
    commands: list[list[str]] = []
    for name, svc in compose["services"].items():
        if svc.get("image", "").startswith("ridehail:"):
            if "entrypoint" in svc:
                script = svc["entrypoint"][-1]
                commands += [part.split()[1:] for part in script.split("&&")]
            else:
                commands.append(list(svc["command"]))
            assert name in {"migrate", "auth", "matching", "pricing", "gateway", "simulator", "topics-cluster"}
    assert ["serve", "gateway"] in commands and ["db", "upgrade"] in commands
    for argv in commands:
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, f"`ridehail {' '.join(argv)}` is not a ridehail command: {result.output}"


def test_images_are_pinned_and_health_gates_start_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "postgres"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"{name} image {image} is not pinned to a version"
        assert "healthcheck" in services[name]
    for name in ("auth", "matching", "pricing", "gateway", "simulator"):
        svc = services[name]
        assert "healthcheck" in svc, name
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["simulator"]["depends_on"]["matching"]["condition"] == "service_healthy"


def test_whole_stack_stays_under_two_gigabytes(compose: dict[str, Any]) -> None:
    total = 0.0
    for name, svc in compose["services"].items():
        limit = svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
        assert limit, f"{name} has no memory limit"
        if not svc.get("profiles"):  # the default stack; the cluster profile is checked below
            total += _memory_mb(limit)
    assert total < 2048, f"memory limits add up to {total:.0f} MB"


def test_cluster_profile_is_a_replicated_kraft_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = {name: svc for name, svc in services.items() if name.startswith("kafka-")}
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    envs = {name: svc["environment"] for name, svc in nodes.items()}
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs.values()) == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    for name, svc in nodes.items():
        env = envs[name]
        assert svc["profiles"] == ["cluster"]
        assert re.fullmatch(r"apache/kafka:\d[\w.-]*", svc["image"])
        assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
        assert f"PLAINTEXT://{name}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert "healthcheck" in svc
    volumes = [svc["volumes"][0].split(":")[0] for svc in nodes.values()]
    assert len(set(volumes)) == 3, "each node needs its own durable volume"
    memory = sum(_memory_mb(svc["deploy"]["resources"]["limits"]["memory"]) for svc in nodes.values())
    assert memory <= 1536, f"the three nodes' memory limits add up to {memory:.0f} MB"
    topics = services["topics-cluster"]
    assert topics["profiles"] == ["cluster"]
    assert all(topics["depends_on"][n]["condition"] == "service_healthy" for n in nodes)
    assert topics["environment"]["RIDEHAIL_KAFKA_BOOTSTRAP"] == "kafka-1:19092,kafka-2:19092,kafka-3:19092"


def test_kafka_is_durable_kraft_with_container_and_host_listeners(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:19092" in advertised and "localhost:" in advertised
    assert any("/var/lib/kafka/data" in v for v in compose["services"]["kafka"]["volumes"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_app_environment_uses_only_known_settings(compose: dict[str, Any]) -> None:
    known = known_setting_names()
    for name, svc in compose["services"].items():
        for key in svc.get("environment") or {}:
            if key.startswith("RIDEHAIL_"):
                assert key in known, f"{name} sets unknown setting {key}"


def test_dockerfile_installs_the_package_and_runs_ridehail() -> None:
    text = (project_root() / "infra" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["ridehail"]' in text
    assert "pip install ." in text
    assert Path(project_root() / "frontend").exists()
