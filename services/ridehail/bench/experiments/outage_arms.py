"""The arms of ``ridehail bench outage``: every (path, acks, budget) pair runs at once, with its
own clients and its own row prefix, through the same outage; one outage gives the whole curve.

The budget is the same for both families: a REST client gives a ping up once it is ``budget_s``
old (time queued in the client counts); a Kafka producer has ``message.timeout.ms = budget``
(librdkafka fails the record then). Each arm's pings have unique ids ``prefix + k`` (k counts
from 0), so the rows in Postgres say exactly which pings arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from ridehail.bench.experiments.load import PathRecorder, PingMaker
from ridehail.common.kafka import EventProducer, delivery_overrides
from ridehail.domain.events import encode
from ridehail.domain.topics import DRIVER_LOCATION
from ridehail.simulator.transport import Outcome, RestPingSender

PATH_CODES = {"kafka": "k", "rest": "r", "rest-kafka": "rk", "rest-kafka-enqueue": "re"}
ACKS_CODES = {"all": "a", "1": "1", "0": "0"}
GONE = ("failed", "refused", "given_up", "dropped", "rejected")  # outcomes after which a ping is not retried


@dataclass(frozen=True)
class Arm:
    path: str
    budget_s: float
    acks: str | None = None  # kafka path only

    @property
    def name(self) -> str:
        acks = f" acks={self.acks}" if self.acks is not None else ""
        return f"{self.path}{acks} budget={self.budget_s:g}s"

    @property
    def code(self) -> str:
        """Letters and digits only (no '-'): the row prefix is ``run tag + code + '-'``."""
        acks = ACKS_CODES[self.acks] if self.acks is not None else ""
        return f"{PATH_CODES[self.path]}{acks}b{self.budget_s:g}".replace(".", "p")


def build_arms(
    paths: tuple[str, ...], budgets: tuple[float, ...], acks_levels: tuple[str, ...], acks_budget_s: float
) -> list[Arm]:
    """Every path at every budget (kafka with acks=all, idempotent), plus kafka with each other acks
    level at ``acks_budget_s``."""
    if not budgets:
        raise ValueError("need at least one budget")
    if any(b <= 0 for b in budgets):
        raise ValueError(f"budgets must be > 0, got {budgets}")
    arms: list[Arm] = []
    for path in paths:
        for budget in budgets:
            arms.append(Arm(path, budget, "all" if path == "kafka" else None))
    if "kafka" in paths:
        for acks in acks_levels:
            if acks not in ACKS_CODES:
                raise ValueError(f"unknown acks level {acks!r}; choose from {sorted(ACKS_CODES)}")
            if acks != "all":
                arms.append(Arm("kafka", acks_budget_s, acks))
    return arms


class KafkaArmLoad:
    """The ``kafka`` path of one arm: the device produces to the broker with the arm's acks and budget."""

    def __init__(self, bootstrap: str, arm: Arm, maker: PingMaker, recorder: PathRecorder, client_id: str) -> None:
        assert arm.acks is not None
        self.producer = EventProducer(bootstrap, client_id, **delivery_overrides(arm.acks, arm.budget_s))
        self.maker = maker
        self.recorder = recorder
        self.answers: dict[str, int] = {}
        self.undelivered_at_close = 0
        self.topic = DRIVER_LOCATION.name

    def _answer(self, kind: str) -> None:
        self.answers[kind] = self.answers.get(kind, 0) + 1

    def emit(self, k: int, due: float) -> None:
        ping = self.maker.make(k)
        rec = self.recorder

        def report(err: KafkaError | None, _: Message, k: int = k, due: float = due) -> None:
            if err is None:
                self._answer("delivered")
                rec.record(k, "accepted", time.monotonic() - due, due)
            else:
                self._answer(err.name())
                rec.record(k, "failed", 0.0, due)

        try:
            self.producer.produce(self.topic, encode(ping), ping.driver_id, on_delivery=report)
        except KafkaException as exc:
            self._answer("produce_refused:" + exc.args[0].name())
            rec.record(k, "refused", 0.0, due)

    @property
    def backlog(self) -> int:
        return self.producer.pending()

    def client_detail(self) -> dict[str, Any]:
        return {
            "answers": dict(sorted(self.answers.items())),
            "undelivered_at_close": self.undelivered_at_close,
            "requeued_after_client_recreation": self.producer.requeued,
        }

    async def finish(self, timeout_s: float) -> None:
        self.undelivered_at_close = await asyncio.to_thread(self.producer.close, timeout_s)


class RestArmLoad:
    """A REST path of one arm: POSTs to the path's edge; given up once ``budget_s`` old."""

    def __init__(
        self,
        url: str,
        arm: Arm,
        maker: PingMaker,
        recorder: PathRecorder,
        token_for: Callable[[str], str],
        connections: int,
        request_timeout_s: float,
    ) -> None:
        self.maker = maker
        self.recorder = recorder
        self.token_for = token_for
        self.budget_s = arm.budget_s
        self.sender = RestPingSender(
            url,
            concurrency=connections,
            timeout_s=request_timeout_s,
            budget_s=arm.budget_s,
            on_result=self._on_result,
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.sender.run(self.stop, drain_s=arm.budget_s + request_timeout_s + 1.0))

    def _on_result(self, tag: Any, outcome: Outcome, latency_s: float) -> None:
        k, due = tag
        self.recorder.record(k, outcome, latency_s, due)

    def emit(self, k: int, due: float) -> None:
        ping = self.maker.make(k)
        self.sender.submit(encode(ping), (k, due), created=due, token=self.token_for(ping.driver_id))

    @property
    def backlog(self) -> int:
        return self.sender.backlog

    def client_detail(self) -> dict[str, Any]:
        st = self.sender.stats
        return {
            "answers": dict(sorted(st.answers.items())),
            "retries": st.retries,
            "given_up": st.given_up,
            "dropped": st.dropped,
            "rejected_4xx": st.rejected,
            "last_error": st.last_error,
        }

    async def finish(self, timeout_s: float) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, timeout=timeout_s + 5)
        except TimeoutError:  # a starved loop: what is still queued counts as not delivered
            self.task.cancel()


ArmLoad = KafkaArmLoad | RestArmLoad
