"""``python -m ridehail.serve <service>``: run one service, importing only what that service uses.

``ridehail up`` starts its children this way rather than through ``ridehail serve`` (the CLI pulls
in typer, rich and every command module: about 10 MB per process that a service never uses).
"""

from __future__ import annotations

import importlib
import sys

from ridehail.catalog import BY_NAME


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in BY_NAME:
        print(f"usage: python -m ridehail.serve {{{','.join(BY_NAME)}}}", file=sys.stderr)
        return 2
    importlib.import_module(f"ridehail.{args[0]}.main").serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
