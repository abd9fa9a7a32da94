"""The committed event schemas and .env.example must match the code (regenerate with
``scripts/generate_contracts.py``)."""

from __future__ import annotations

import json

import jsonschema
import msgspec

from ridehail.common.contracts import ENV_EXAMPLE, EVENTS_DIR, render_env_example, render_event_schemas
from ridehail.common.settings import known_setting_names
from ridehail.domain import events


def test_event_schemas_are_committed_and_current() -> None:
    expected = render_event_schemas()
    on_disk = {p.name: p.read_text() for p in EVENTS_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(expected), "run scripts/generate_contracts.py"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} drifted from the code: run scripts/generate_contracts.py"


def test_env_example_documents_every_setting() -> None:
    assert ENV_EXAMPLE.read_text() == render_env_example(), "run scripts/generate_contracts.py"
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.startswith("# RIDEHAIL_")
    }
    assert documented == known_setting_names()


def test_encoded_events_validate_against_their_published_schema() -> None:
    samples = [
        events.DriverLocation(driver_id="drv-1", seq=3, lat=57.7, lon=11.97, heading=90.0, speed=8.5),
        events.RideRequested(
            ride_id="r1",
            rider_id="u1",
            pickup=events.LatLon(57.70, 11.96),
            dropoff=events.LatLon(57.71, 11.99),
        ),
        events.RideAssigned(
            ride_id="r1",
            driver_id="drv-1",
            pickup=events.LatLon(57.70, 11.96),
            dropoff=events.LatLon(57.71, 11.99),
            eta_s=120,
        ),
        events.RideCompleted(ride_id="r1", driver_id="drv-1", distance_m=3000, duration_s=400),
        events.RideExpired(ride_id="r2", reason="no driver within 3000 m"),
    ]
    schemas = render_event_schemas()
    for event in samples:
        name = f"{events.event_type(type(event))}.v{events.SCHEMA_VERSION}.schema.json"
        jsonschema.validate(json.loads(events.encode(event)), json.loads(schemas[name]))


def test_schema_rejects_what_the_decoder_rejects() -> None:
    schema = json.loads(render_event_schemas()["driver.location.v1.schema.json"])
    bad = {"type": "driver.location", "driver_id": "d", "seq": 1, "lat": 123.0, "lon": 11.0}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("schema accepted an out-of-range latitude")
    decoder = events.EventDecoder(events.DriverLocation)
    try:
        decoder.decode(msgspec.json.encode(bad))
    except events.EventError as exc:
        assert "lat" in exc.reason or "<=" in exc.reason
    else:
        raise AssertionError("decoder accepted an out-of-range latitude")
