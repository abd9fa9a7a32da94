"""``python -m ridehail.serve <service>[+<service>...]``: run one service, or several in one process,
importing only what they use.

``ridehail up`` starts its children this way rather than through ``ridehail serve`` (the CLI pulls
in typer, rich and every command module: about 10 MB per process that a service never uses).
Here even rich stays out (structlog would load it on its own for pretty tracebacks).
``auth+pricing`` runs both services in one process (see :mod:`ridehail.common.service`).
"""

from __future__ import annotations

import importlib
import sys

from ridehail.catalog import BY_NAME


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = args[0].split("+") if len(args) == 1 else []
    if not names or any(n not in BY_NAME for n in names) or len(set(names)) != len(names):
        print(
            f"usage: python -m ridehail.serve SERVICE[+SERVICE...], SERVICE one of {','.join(BY_NAME)}", file=sys.stderr
        )
        return 2
    # structlog imports rich, if it is installed, for pretty tracebacks (about 7 MB per process);
    # the CLI needs rich, a service never does: a service's tracebacks are printed plainly.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from ridehail.common.service import run_services

    run_services([importlib.import_module(f"ridehail.{name}.main").SERVICE for name in names])
    return 0


if __name__ == "__main__":
    sys.exit(main())
