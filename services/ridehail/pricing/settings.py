"""Pricing service settings (surge window, curve and smoothing)."""

from __future__ import annotations

from pydantic import Field

from ridehail.common.settings import CommonSettings
from ridehail.domain.surge import SurgePolicy


class PricingSettings(CommonSettings):
    pricing_group_id: str = Field(default="ridehail-pricing", description="Pricing consumer group id.")
    pricing_window_s: float = Field(
        default=300.0, gt=0, le=3600, description="Sliding window over which demand and supply are counted."
    )
    pricing_tick_ms: int = Field(
        default=1000, ge=100, le=60_000, description="How often every cell's multiplier is recomputed."
    )
    pricing_cap: float = Field(default=3.0, ge=1.0, le=10.0, description="Highest surge multiplier.")
    pricing_threshold: float = Field(
        default=1.0, ge=0, le=100, description="Demand/(supply+1) ratio above which surge starts."
    )
    pricing_sensitivity: float = Field(
        default=0.5, gt=0, le=10, description="Multiplier added per unit of demand/supply ratio above the threshold."
    )
    pricing_step: float = Field(default=0.1, gt=0, le=1, description="Published multipliers are multiples of this.")
    pricing_smoothing: float = Field(
        default=0.5, gt=0, le=1, description="Weight of the new target per recompute (1 = no smoothing)."
    )
    pricing_persist: bool = Field(
        default=True, description="Also write the current multiplier per cell to Postgres (surge_cells)."
    )

    def policy(self) -> SurgePolicy:
        return SurgePolicy(
            window_s=self.pricing_window_s,
            cap=self.pricing_cap,
            threshold=self.pricing_threshold,
            sensitivity=self.pricing_sensitivity,
            step=self.pricing_step,
            smoothing=self.pricing_smoothing,
        )
