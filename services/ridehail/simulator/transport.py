"""How pings leave the simulator: straight to the broker (``kafka``) or as HTTP POSTs to the
ingestion edge (``rest`` / ``rest-kafka``: the edge decides whether it writes Postgres or the broker).

:class:`RestPingSender` posts with bounded concurrency (a fixed pool of keep-alive connections),
retries ``503``/``429``/connection errors with backoff (honouring ``Retry-After``) until a ping
is ``retry_s`` old, and counts every outcome. With ``budget_s`` a ping is given up once it is
``budget_s`` old wherever it waits (queued in this client included), and ``stats.answers``
counts what each attempt got, by kind (``2xx``, ``503_retry_after``, ``503``, ``429``, ``5xx``,
``4xx``, or the transport error's kind: ``refused``, ``timeout``, ``reset``, ...). A 4xx other
than 429 is the client's fault: it is counted as rejected and never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from prometheus_client import Counter

from ridehail.common.logging import get_logger
from ridehail.simulator.httpclient import HttpPingClient, HttpTransportError

log = get_logger(__name__)

Transport = Literal["kafka", "rest", "rest-kafka"]
Outcome = Literal["accepted", "rejected", "given_up", "dropped"]
ResultCallback = Callable[[Any, Outcome, float], None]

REST_OUTCOMES = Counter("ridehail_simulator_rest_pings_total", "Pings posted to the ingestion edge", ["outcome"])
REST_RETRIES = Counter("ridehail_simulator_rest_retries_total", "Ping posts retried after 503/429/connection error")


@dataclass(slots=True)
class RestStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0  # 4xx: bad ping, never retried
    unavailable: int = 0  # 503/429/5xx answers (each attempt)
    connection_errors: int = 0  # refused, reset, timed out (each attempt)
    retries: int = 0
    given_up: int = 0  # still failing retry_s after the ping was made
    dropped: int = 0  # never sent: the local queue was full or the ping waited too long for a connection
    last_error: str = ""
    answers: dict[str, int] = field(default_factory=dict)  # per attempt, by kind (see the module doc)

    def answer(self, kind: str) -> None:
        self.answers[kind] = self.answers.get(kind, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_STOP = object()


def _answer_kind(status: int, retry_after_s: float | None) -> str:
    if status == 503:
        return "503_retry_after" if retry_after_s is not None else "503"
    if status == 429:
        return "429"
    return f"{status // 100}xx"


class RestPingSender:
    """Queue of pings posted by ``concurrency`` workers; ``submit`` never blocks the fleet loop."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 64,
        retry_s: float = 10.0,
        timeout_s: float = 5.0,
        queue_max: int = 200_000,
        max_queue_wait_s: float | None = None,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        on_result: ResultCallback | None = None,
        budget_s: float | None = None,
    ) -> None:
        self.url = url
        self.budget_s = budget_s
        if budget_s is not None:
            retry_s = budget_s
        self.client = HttpPingClient(url, connections=concurrency, timeout_s=timeout_s)
        self.concurrency = concurrency
        self.retry_s = retry_s
        self.max_queue_wait_s = max_queue_wait_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.on_result = on_result
        self.stats = RestStats()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_max)
        self._retrying = 0
        self._rng = random.Random()

    @property
    def backlog(self) -> int:
        """Pings waiting in this client: queued plus waiting out a retry backoff."""
        return self._queue.qsize() + self._retrying

    def submit(self, body: bytes, tag: Any = None, created: float | None = None, token: str | None = None) -> None:
        """Queue one ping; ``token`` (the driver's access token) goes with it as a bearer token."""
        self.stats.submitted += 1
        item = (body, time.monotonic() if created is None else created, 0, tag, token)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._finish(tag, "dropped", 0.0)

    def _finish(self, tag: Any, outcome: Outcome, latency_s: float) -> None:
        if outcome == "accepted":
            self.stats.accepted += 1
        elif outcome == "rejected":
            self.stats.rejected += 1
        elif outcome == "given_up":
            self.stats.given_up += 1
        else:
            self.stats.dropped += 1
        REST_OUTCOMES.labels(outcome).inc()
        if self.on_result is not None:
            self.on_result(tag, outcome, latency_s)

    def _requeue(self, item: tuple[bytes, float, int, Any, str | None]) -> None:
        self._retrying -= 1
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._finish(item[3], "dropped", 0.0)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        post = self.client.post
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            body, created, attempt, tag, token = item
            now = time.monotonic()
            if self.budget_s is not None and now - created >= self.budget_s:
                self._finish(tag, "given_up", now - created)
                continue
            if attempt == 0 and self.max_queue_wait_s is not None and now - created > self.max_queue_wait_s:
                self._finish(tag, "dropped", 0.0)
                continue
            retry_after: float | None = None
            try:
                answer = await post(body, token)
            except HttpTransportError as exc:
                self.stats.connection_errors += 1
                self.stats.answer(exc.kind)
                self.stats.last_error = str(exc)[:200]
            else:
                status = answer.status
                self.stats.answer(_answer_kind(status, answer.retry_after_s))
                if 200 <= status < 300:
                    self._finish(tag, "accepted", time.monotonic() - created)
                    continue
                if 400 <= status < 500 and status != 429:
                    self.stats.last_error = f"{status} {answer.body[:200].decode(errors='replace')}"
                    self._finish(tag, "rejected", time.monotonic() - created)
                    continue
                self.stats.unavailable += 1
                self.stats.last_error = f"{status} {answer.body[:200].decode(errors='replace')}"
                retry_after = answer.retry_after_s
            delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * self._rng.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if time.monotonic() + delay - created > self.retry_s:
                self._finish(tag, "given_up", time.monotonic() - created)
                continue
            self.stats.retries += 1
            REST_RETRIES.inc()
            self._retrying += 1
            loop.call_later(delay, self._requeue, (body, created, attempt + 1, tag, token))

    async def run(self, stop: asyncio.Event, drain_s: float = 2.0) -> None:
        """Post until ``stop``; then give queued pings ``drain_s`` to go out and close."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await stop.wait()
            deadline = time.monotonic() + drain_s
            while self.backlog and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for _ in workers:
                await self._queue.put(_STOP) if self._queue.full() else self._queue.put_nowait(_STOP)
            done, pending = await asyncio.wait(workers, timeout=drain_s + 1)
            for task in pending:
                task.cancel()
            self.client.close()
            if self.stats.given_up or self.stats.dropped:
                log.warning("rest_pings_lost_in_client", **self.stats.as_dict())
