"""Settings of the local Kafka cluster and of the broker choice for ``ridehail up``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings, load_settings


class ClusterSettings(CommonSettings):
    broker: Literal["tansu", "kafka"] = Field(
        default="tansu",
        description="Broker `ridehail up` starts when RIDEHAIL_KAFKA_BOOTSTRAP is unset: `tansu` (embedded, in "
        "memory, forgets on restart) or `kafka` (a local replicated Apache Kafka cluster; needs Java 17 and Maven).",
    )
    kafka_brokers: int = Field(
        default=3, ge=1, le=9, description="Nodes of the local Kafka cluster (each one broker + controller JVM)."
    )
    kafka_heap_mb: int = Field(default=384, ge=192, le=8192, description="Java heap of each local Kafka node, MiB.")
    kafka_controller_port: int = Field(
        default=9192,
        ge=1,
        le=65535,
        description="First controller port of the local Kafka cluster (node i uses this + i - 1); client ports "
        "start at RIDEHAIL_BROKER_PORT.",
    )
    kafka_cache_dir: Path | None = Field(
        default=None,
        description="Where the Kafka jars are cached (unset: $XDG_CACHE_HOME/ridehail, else ~/.cache/ridehail).",
    )

    @property
    def kafka_state_dir(self) -> Path:
        """Durable data of the local cluster used by `ridehail up` and `ridehail kafka up`."""
        return self.state_dir / "kafka"


def wants_local_cluster() -> bool:
    """True when the environment asks `ridehail up` for the local Kafka cluster (RIDEHAIL_BROKER=kafka).

    Here, not in ``cluster.stack``, so the supervisor can ask without importing the cluster's
    Kafka client and psutil when it runs on the embedded broker.
    """
    return load_settings(ClusterSettings).broker == "kafka"  # an invalid value exits with its name
