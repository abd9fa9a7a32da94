"""Where the project's files are: the road data, the migrations, the map's static files.

In a checkout (and in the container image, which copies the project to /app) they sit beside the
package: ``<root>/data``, ``<root>/infra``, ``<root>/frontend``. The root is the first folder,
going up from this package and then from the working directory, that holds ``infra/alembic.ini``.
"""

from __future__ import annotations

import functools
from pathlib import Path

_MARKER = Path("infra") / "alembic.ini"


class ProjectFilesMissing(RuntimeError):
    """The project's data files cannot be found (an install without its checkout)."""


@functools.cache
def project_root() -> Path:
    here = Path(__file__).resolve()
    for candidate in [*here.parents, Path.cwd().resolve(), *Path.cwd().resolve().parents]:
        if (candidate / _MARKER).is_file():
            return candidate
    raise ProjectFilesMissing(
        f"cannot find the ridehail project files ({_MARKER} and data/) above {here.parent} or the working "
        "directory: run from a checkout (or the container image's /app)"
    )


def data_dir() -> Path:
    return project_root() / "data"


def infra_dir() -> Path:
    return project_root() / "infra"


def frontend_dir() -> Path:
    return project_root() / "frontend"


def docs_dir() -> Path:
    return project_root() / "docs"
