"""The recording the repository ships (data/recordings/sample-rush-hour.rhrec) replays into a real
broker and a real matching service, and the rides and drivers it leaves are the recorded ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
import orjson
import pytest

from ridehail.common.ports import free_port
from ridehail.common.postgres import to_asyncpg_dsn
from ridehail.domain.topics import DRIVER_LOCATION, RIDE_EVENT, RIDE_REQUEST
from ridehail.harness.scratch import private_broker
from ridehail.harness.services import running_matching, wait_until
from ridehail.matching.settings import MatchingSettings
from ridehail.replay.recording_reader import RecordingReader
from ridehail.replay.replay_options import ReplayOptions
from ridehail.replay.replayer import Replayer

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "recordings" / "sample-rush-hour.rhrec"
# What a ride's last recorded lifecycle event leaves in the rides table.
STATUS_AFTER = {
    "ride.requested": "requested",
    "ride.assigned": "assigned",
    "ride.arrived": "arrived",
    "ride.picked_up": "in_progress",
    "ride.completed": "completed",
}


def recorded() -> tuple[Counter[str], dict[str, str], set[str]]:
    """Record counts by event type, each ride's expected status, and every driver that pinged."""
    types: Counter[str] = Counter()
    last: dict[str, str] = {}
    drivers: set[str] = set()
    with RecordingReader(SAMPLE) as reader:
        for record in reader.records():
            doc = orjson.loads(record.value or b"{}")
            types[doc["type"]] += 1
            if doc["type"] == "driver.location":
                drivers.add(doc["driver_id"])
            elif "ride_id" in doc:
                last[doc["ride_id"]] = doc["type"]
    return types, {ride: STATUS_AFTER[t] for ride, t in last.items()}, drivers


async def test_sample_recording_replays_into_matching(fresh_database_url: str) -> None:
    types, expected_status, drivers = recorded()
    # The file holds what data/recordings/README.md says it holds.
    assert sum(types.values()) == 53_513
    assert types["driver.location"] == 53_177 and types["ride.requested"] == 95
    assert len(drivers) == 100

    with private_broker() as bootstrap:
        settings = MatchingSettings(
            kafka_bootstrap=bootstrap,
            database_url=fresh_database_url,
            matching_port=free_port(),
            matching_eta_model="straight_line",
        )
        async with running_matching(settings):
            result = await asyncio.to_thread(Replayer(SAMPLE, bootstrap, ReplayOptions(speed=None)).run)
            assert (result.sent, result.failed) == (53_513, 0)
            assert set(result.per_topic) <= {DRIVER_LOCATION.name, RIDE_REQUEST.name, RIDE_EVENT.name}
            conn = await asyncpg.connect(to_asyncpg_dsn(fresh_database_url))
            try:

                async def settled() -> bool:
                    rows = await conn.fetch("SELECT ride_id, status FROM rides")
                    return {r["ride_id"]: r["status"] for r in rows} == expected_status

                async def every_driver_stored() -> bool:  # pings and rides are separate consumers
                    return await conn.fetchval("SELECT count(*) FROM drivers") == len(drivers)

                assert await wait_until(settled, 90), "the rides table never matched the recording"
                assert await wait_until(every_driver_stored, 30), (
                    f"{await conn.fetchval('SELECT count(*) FROM drivers')} of {len(drivers)} drivers stored"
                )
                assert (
                    await conn.fetchval("SELECT count(*) FROM rides WHERE driver_id IS NULL AND status <> 'requested'")
                    == 0
                )
            finally:
                await conn.close()
