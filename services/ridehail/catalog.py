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
