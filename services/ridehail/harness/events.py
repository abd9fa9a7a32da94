"""An event collector for tests and benchmarks: reads topics from the beginning in a background
thread and keeps every message it saw, decoded when it is a ridehail event."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer

from ridehail.common.kafka import message_headers
from ridehail.domain.events import ALL_EVENT_TYPES, Event, EventDecoder, EventError


@dataclass
class Collected:
    event: Event | None
    raw: bytes
    headers: dict[str, bytes]
    received_at: float


@dataclass
class EventCollector:
    """Reads topics from the beginning in a background thread and keeps everything it saw."""

    bootstrap: str
    topics: list[str]
    items: list[Collected] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    on_event: Callable[[Collected], None] | None = None

    def start(self) -> EventCollector:
        self._thread = threading.Thread(target=self._run, daemon=True, name="collector")
        self._thread.start()
        return self

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"collector-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 5,
                "allow.auto.create.topics": False,
            }
        )
        consumer.subscribe(self.topics, on_assign=lambda *_: self._ready.set())
        decoder = EventDecoder(*ALL_EVENT_TYPES)
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.05)  # returns as soon as one message is there: no added latency
                if msg is None or msg.error() is not None:
                    continue
                if True:
                    raw = msg.value() or b""
                    try:
                        event: Event | None = decoder.decode(raw)
                    except EventError:
                        event = None
                    headers = {k: v for k, v in message_headers(msg) if v is not None}
                    item = Collected(event, raw, headers, time.time())
                    self.items.append(item)
                    if self.on_event is not None:
                        self.on_event(item)
        finally:
            consumer.close()

    def wait_ready(self, timeout_s: float = 20.0) -> bool:
        return self._ready.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def events(self, cls: type[Event] | None = None) -> list[Event]:
        return [i.event for i in list(self.items) if i.event is not None and (cls is None or isinstance(i.event, cls))]
