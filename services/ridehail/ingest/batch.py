"""``POST /ingest/pings``: a JSON array of ``DriverLocation`` pings, written together.

Each item is decoded and checked like a single ping (schema, service area); an invalid item is
answered ``rejected`` with its reason while the valid ones are written (``rest``: one upsert
statement for the whole batch, newest seq per driver wins; ``rest-kafka``: one record per ping,
produced together). The request itself is refused only when the body is not a JSON array (400
malformed JSON, 422 not an array or empty), holds more than ``RIDEHAIL_INGEST_MAX_BATCH`` items
(413), or the caller may not send it.

Who may send a batch: a ``driver`` token may batch only its own pings (one ping of another
driver refuses the whole request with 403); an ``admin`` token is accepted as a trusted
aggregator, e.g. a fleet telematics gateway that forwards the pings of many vehicles and
authenticates them itself, and may send pings of any drivers. Every other role gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ridehail.common.auth_tokens import Principal
from ridehail.domain.events import DriverLocation, EventDecoder, EventError
from ridehail.domain.geo import SERVICE_AREA

AGGREGATOR_ROLE = "admin"

_decoder = EventDecoder(DriverLocation)
_items = msgspec.json.Decoder(list[msgspec.Raw])


class BatchRefused(ValueError):
    """The whole request is refused (status + reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class ParsedBatch:
    pings: list[DriverLocation]  # the valid ones, in order
    positions: list[int]  # the index in the request of each valid ping
    rejected: dict[int, str]  # index -> reason
    size: int


def parse_batch(body: bytes, max_items: int) -> ParsedBatch:
    """Split a batch body into valid pings and per-item rejections (never raises anything else
    than :class:`BatchRefused`)."""
    try:
        items = _items.decode(body)
    except msgspec.ValidationError as exc:
        raise BatchRefused(422, f"a batch is a JSON array of pings: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BatchRefused(400, f"malformed JSON: {exc}") from None
    if not items:
        raise BatchRefused(422, "empty batch")
    if len(items) > max_items:
        raise BatchRefused(413, f"too many pings in one batch: {len(items)} > {max_items}")
    out = ParsedBatch([], [], {}, len(items))
    for i, raw in enumerate(items):
        try:
            event = _decoder.decode(bytes(raw))
        except EventError as exc:
            out.rejected[i] = exc.reason
            continue
        if not isinstance(event, DriverLocation):
            out.rejected[i] = "not a driver.location"
            continue
        if not SERVICE_AREA.contains(event.lat, event.lon):
            out.rejected[i] = f"position outside the service area: {event.lat},{event.lon}"
            continue
        out.pings.append(event)
        out.positions.append(i)
    return out


def check_sender(principal: Principal, batch: ParsedBatch) -> None:
    """403 unless the token may send every valid ping of the batch."""
    if principal.role == AGGREGATOR_ROLE:
        return
    if principal.role != "driver":
        raise BatchRefused(403, f"a batch needs a driver's token or an {AGGREGATOR_ROLE} (aggregator) token")
    others = sorted({p.driver_id for p in batch.pings if p.driver_id != principal.sub})
    if others:
        raise BatchRefused(403, f"a driver's token may batch only its own pings; not {', '.join(others[:5])}")


def results(batch: ParsedBatch, outcomes: list[str]) -> list[dict[str, str]]:
    """Per-item answers in request order: ``{"status": outcome}`` or ``{"status": "rejected", "reason": ...}``."""
    out: list[dict[str, str]] = [{"status": "rejected", "reason": r} for r in [""] * batch.size]
    for pos, outcome in zip(batch.positions, outcomes, strict=True):
        out[pos] = {"status": outcome}
    for pos, reason in batch.rejected.items():
        out[pos] = {"status": "rejected", "reason": reason}
    return out
