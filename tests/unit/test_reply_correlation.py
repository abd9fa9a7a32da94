"""Correlation bookkeeping of the Kafka request/reply caller (``bench reply``): a reply settles its
pending request; a reply after the caller gave up is counted as late for its run, never dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from ridehail.bench.experiments.reply_correlation import Correlator, reply_topic, request_topic
from ridehail.bench.experiments.reply_env import bench_topics
from ridehail.domain.topics import all_topic_specs


def test_a_reply_settles_the_pending_request_and_hands_the_caller_the_body() -> None:
    async def scenario() -> None:
        c = Correlator()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        c.open("a", "run-1", due=10.0, future=fut)
        assert c.reply("a", {"status": 200}, arrived=10.05) == "answered"
        assert fut.result() == (10.05, {"status": 200})
        assert c.answered == 1 and not c.pending and not c.expired

    asyncio.run(scenario())


def test_a_reply_after_the_time_out_is_late_for_its_run_with_its_age() -> None:
    c = Correlator()
    c.open("a", "run-1", due=10.0)
    c.open("b", "run-2", due=11.0)
    assert c.expire("a") is True
    assert c.expire("a") is False  # already given up
    assert c.still_expired("run-1") == 1
    assert c.reply("a", {"status": 200}, arrived=15.0) == "late"
    assert c.late_for("run-1") == 1 and c.late_for("run-2") == 0
    assert c.late_between("run-1", 9.0, 10.5) == [(10.0, 15.0)]
    assert c.late_between("run-1", 10.5, 20.0) == []
    assert c.still_expired("run-1") == 0
    assert c.answered == 0


def test_unknown_and_duplicate_replies_are_unmatched_and_ids_cannot_be_reused() -> None:
    c = Correlator()
    c.open("a", "run-1", due=1.0)
    assert c.reply("zzz", {}, arrived=1.0) == "unmatched"
    assert c.reply("a", {}, arrived=1.1) == "answered"
    assert c.reply("a", {}, arrived=1.2) == "unmatched"  # a duplicate reply
    assert c.unmatched == 2
    c.open("b", "run-1", due=2.0)
    c.expire("b")
    with pytest.raises(ValueError):
        c.open("b", "run-1", due=3.0)


def test_expiring_cancels_the_callers_future() -> None:
    async def scenario() -> None:
        c = Correlator()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        c.open("a", "t", due=0.0, future=fut)
        c.expire("a")
        assert fut.cancelled()
        assert c.reply("a", {}, arrived=1.0) == "late"  # the late reply does not touch the cancelled future

    asyncio.run(scenario())


def test_bench_topics_stay_out_of_the_production_registry() -> None:
    names = {s.name for s in bench_topics("r1")}
    assert names == {request_topic("login"), request_topic("ride"), reply_topic("r1")}
    assert not names & {s.name for s in all_topic_specs()}


def test_the_pacer_sends_each_request_at_its_own_due_time() -> None:
    from ridehail.bench.experiments.load import paced

    async def scenario() -> list[tuple[int, float, float]]:
        sent: list[tuple[int, float, float]] = []
        stop = asyncio.Event()
        task = asyncio.create_task(paced(20.0, lambda k, due: sent.append((k, due, time.monotonic())), stop))
        await asyncio.sleep(0.22)
        stop.set()
        await task
        return sent

    sent = asyncio.run(scenario())
    assert [k for k, _, _ in sent] == list(range(len(sent))) and 4 <= len(sent) <= 6
    start = sent[0][1]
    for k, due, at in sent:
        assert due == pytest.approx(start + k / 20.0)
        assert at >= due - 1e-6  # never early
        assert at - due < 0.04  # and not one interval (50 ms) late
