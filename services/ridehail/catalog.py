"""The catalogue of ridehail services: the one list the CLI (``ridehail serve``), ``ridehail up``
and the settings check read. Adding a service means adding it here (and its package)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    ports: tuple[str, ...]  # settings (CommonSettings fields) of the ports it binds, HTTP first
    in_stack: bool = True  # started by `ridehail up`


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("auth", ("auth_port",)),
    ServiceInfo("matching", ("matching_port",)),
    ServiceInfo("pricing", ("pricing_port",)),
    ServiceInfo("gateway", ("gateway_port", "gateway_ws_port")),
    ServiceInfo("simulator", ("simulator_port",)),
    ServiceInfo("ingest", ("ingest_port",), in_stack=False),  # the REST ingest edge of the experiments
)
BY_NAME = {s.name: s for s in SERVICES}
STACK_ORDER: tuple[str, ...] = tuple(s.name for s in SERVICES if s.in_stack)
# Every module defining a settings class (the strict check knows every RIDEHAIL_* variable from these).
SETTINGS_MODULES: tuple[str, ...] = (
    *(f"ridehail.{s.name}.settings" for s in SERVICES),
    "ridehail.common.tariff",
    "ridehail.cluster.settings",
)


def port_setting(field: str) -> str:
    """The environment variable of a settings field: ``auth_port`` -> ``RIDEHAIL_AUTH_PORT``."""
    return "RIDEHAIL_" + field.upper()


DEFAULT_SHARED_PROCESSES = "auth+pricing+simulator"  # light services, none on a latency path


def process_groups(spec: str, services: tuple[str, ...] = STACK_ORDER) -> list[tuple[str, ...]]:
    """How ``ridehail up`` splits ``services`` into processes, from ``RIDEHAIL_SHARED_PROCESSES``.

    ``spec`` lists the services that share a process, ``+`` inside a group and ``,`` between groups
    (``"auth+pricing"``; ``"none"`` or empty: one process each). A service named in no group runs alone. Groups
    keep the stack's start order (a group starts where its first service would), and only the
    services asked for are kept. Raises ValueError naming an unknown, repeated or not-in-stack service.
    """
    groups: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for raw in ("" if spec.strip().lower() == "none" else spec).split(","):
        names = tuple(n.strip() for n in raw.split("+") if n.strip())
        if not names:
            continue
        for name in names:
            if name not in BY_NAME or not BY_NAME[name].in_stack:
                raise ValueError(f"{name!r} is not a service of the stack; choose from {', '.join(STACK_ORDER)}")
            if name in seen:
                raise ValueError(f"{name!r} is named twice; a service runs in one process only")
            seen.add(name)
        groups.append(names)
    wanted = [tuple(n for n in g if n in services) for g in groups]
    out = [g for g in wanted if g] + [(n,) for n in services if n not in seen]
    order = {name: i for i, name in enumerate(STACK_ORDER)}
    return sorted((tuple(sorted(g, key=order.__getitem__)) for g in out), key=lambda g: order[g[0]])
