"""Gateway service settings."""

from __future__ import annotations

from ridehail.common.settings import CommonSettings


class GatewaySettings(CommonSettings):
    pass
