"""``python -m ridehail.stack.prepare``: the one-shot start-up work of ``ridehail up`` in its own
process (migrations, topics, the demo login code), so the long-lived supervisor never imports
Alembic, SQLAlchemy or the auth package (about 30 MB it would keep for the whole run).

Reads ``RIDEHAIL_DATABASE_URL`` and ``RIDEHAIL_KAFKA_BOOTSTRAP``; prints one JSON line
(``{"login_code": ...}``) on success; on failure prints the reason on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ridehail.stack.prepare")
    parser.add_argument("--topics-only", action="store_true", help="only (re-)create the topics")
    parser.add_argument("--login-code", action="store_true", help="also create a demo-viewer login code")
    args = parser.parse_args(argv)
    from ridehail.common.logging import configure_logging
    from ridehail.common.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)
    configure_logging(settings.log_level, settings.log_format, service="up")
    url = os.environ["RIDEHAIL_DATABASE_URL"]
    bootstrap = os.environ["RIDEHAIL_KAFKA_BOOTSTRAP"]
    out: dict[str, str | None] = {}
    if not args.topics_only:
        from ridehail.common import migrate

        migrate.upgrade(url)
    from ridehail.common.topics import ensure_topics

    try:
        ensure_topics(bootstrap, timeout_s=30)
    except RuntimeError as exc:
        print(f"cannot create topics: {exc}", file=sys.stderr)
        return 2
    if args.login_code:
        from ridehail.auth.demo import create_login_code_sync

        try:
            out["login_code"] = create_login_code_sync(url)
        except Exception as exc:
            out["login_code_error"] = str(exc)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
