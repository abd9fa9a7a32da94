"""A small real run of ``ridehail bench outage`` on the embedded broker (tansu): real subprocesses
(matching, ingest edges), a private Postgres; checks the JSON shape, that every arm's accounting
adds up (produced = persisted + lost, from Postgres rows against the client's ids) and that with
only the consumer down nothing acknowledged by acks=all is lost."""

from __future__ import annotations

import json
import uuid

import pytest

from ridehail.bench.experiments.outage_bench import run_outage_bench
from ridehail.bench.experiments.outage_trace import keys_on_topic
from ridehail.bench.experiments.report_outage import plot_outage
from ridehail.common.kafka import EventProducer
from ridehail.common.topics import ensure_topics
from ridehail.domain.topics import TopicSpec

pytestmark = pytest.mark.integration


def test_outage_bench_consumer_down_small_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_outage_bench(
        scenarios=("consumer",),
        paths=("kafka", "rest"),
        outage_s=3.0,
        rate=30.0,
        budgets=(4.0, 20.0),
        brokers=("tansu",),
        repeats=1,
        acks_levels=("0", "all"),
        pre_s=2.0,
        post_s=4.0,
    )
    json.dumps(result)  # serialisable
    assert result["bench"] == "outage"
    assert {"cpu_count", "load_avg_at_start", "load_avg_at_end"} <= set(result["machine"])
    assert {"budgets_s", "rate_per_arm_per_s", "outage_s", "broker_description", "freshness_threshold_s"} <= set(
        result["config"]
    )
    (run,) = result["runs"]
    assert run["scenario"] == "consumer" and run["broker"] == "tansu"
    assert run["outage_start_s"] < run["outage_end_s"] < run["load_end_s"]
    assert run["settled_by"] in ("all_answered", "quiet", "timeout")
    arms = {p["arm"]: p for p in run["paths"]}
    assert set(arms) == {
        "kafka acks=all budget=4s",
        "kafka acks=all budget=20s",
        "kafka acks=0 budget=20s",
        "rest budget=4s",
        "rest budget=20s",
    }
    for p in arms.values():
        assert p["produced"] > 150
        assert p["produced"] == p["persisted"] + p["lost"], p
        assert p["lost"] == p["acknowledged_but_lost"] + p["lost_caller_told"], p
        assert p["freshness"]["threshold_s"] == 3.0
        assert "answers" in p["client"]
    for name in ("kafka acks=all budget=4s", "kafka acks=all budget=20s"):
        # only the consumer was down: the topic holds every acknowledged ping until matching is back
        detail = json.dumps({k: v for k, v in arms[name].items() if k != "timeline"})
        assert arms[name]["acknowledged_but_lost"] == 0, detail
        assert arms[name]["lost"] == 0, arms[name]
        assert arms[name]["backlog_peak"] >= 30 * 2
        assert arms[name]["catch_up_s"] is not None
    rest = arms["rest budget=20s"]
    assert rest["lost"] == 0 and rest["client"]["answers"].get("2xx", 0) >= rest["produced"]
    assert len(result["summary"]) == len(arms)
    assert all(s["lost"]["runs"] == 1 for s in result["summary"])
    plot_outage(result, tmp_path / "outage.png")
    assert (tmp_path / "outage.png").stat().st_size > 10_000


def test_trace_finds_which_keys_the_topic_holds(broker: str) -> None:
    run = uuid.uuid4().hex[:8]
    topic, empty = f"trace-{run}", f"trace-{run}-empty"
    ensure_topics(broker, [TopicSpec(topic, 3, "key", "trace test"), TopicSpec(empty, 1, "key", "trace test")])
    sent = [f"trace-{run}-{i}" for i in range(5)]
    producer = EventProducer(broker, f"trace-{run}")
    for key in sent:
        producer.produce(topic, b"{}", key)
    assert producer.close(10) == 0
    never = f"trace-{run}-never"
    assert keys_on_topic(broker, topic, [*sent[:3], never]) == set(sent[:3])
    assert keys_on_topic(broker, empty, sent) == set()
    assert keys_on_topic(broker, topic, []) == set()
    assert keys_on_topic(broker, f"trace-{run}-missing", sent) is None  # unreadable, not "none found"
