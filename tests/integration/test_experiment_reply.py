"""A tiny ``bench reply`` run against real processes (private Postgres, tansu, the auth service
and the Kafka login responder): the JSON has the documented shape, every request is accounted
for, and with the responder down the REST caller learns of it sooner than the Kafka caller's
time-out, while the Kafka requests are answered late, after the caller gave up."""

from __future__ import annotations

import json

import pytest

from ridehail.bench.experiments.reply_bench import run_reply_bench
from ridehail.bench.experiments.report_reply import plot_reply

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0


def test_reply_bench_small_run_accounts_for_every_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_reply_bench(
        repeats=1,
        rate=4.0,
        seconds=1.0,
        warmup=0.3,
        timeout=TIMEOUT_S,
        outage_seconds=0.5,
        after_seconds=0.5,
        operations=("login",),
    )
    json.dumps(result)  # serialisable
    assert result["bench"] == "reply"
    assert {"load_avg_at_start", "load_avg_at_end", "cpu_count"} <= set(result["machine"])
    assert result["config"]["timeout"] == TIMEOUT_S
    assert result["password_hashing"]["verify_ms_median"] > 0
    assert {"broker", "postgres", "caller (bench process)"} <= set(result["idle_cores"])
    assert sorted((r["path"], r["operation"]) for r in result["runs"]) == [("kafka", "login"), ("rest", "login")]
    for run in result["runs"]:
        assert run["offered"] == run["answered"] + run["unanswered"]
        assert sum(run["outcomes"].values()) == run["offered"] > 0
        assert 0 <= run["late_replies"] <= run["unanswered"]
        assert {"p50_ms", "p99_ms", "cpu_s", "cpu_cores", "percentiles"} <= set(run)
        assert run["cpu_s"]["postgres"] >= 0 and "caller (bench process)" in run["cpu_s"]
    assert {"rest:login", "kafka:login", "ratio_kafka_over_rest_median_p50:login"} <= set(result["summary"])
    assert {"median", "iqr", "runs"} <= set(result["summary"]["rest:login"]["p50_ms"])

    down = result["responder_down"]
    assert set(down) == {"rest", "kafka"}
    for path, d in down.items():
        assert d["sent_while_down"] == d["answered"] + d["unanswered"] > 0, path
        assert sum(d["errors_by_kind"].values()) == d["unanswered"], path
        assert 0 <= d["late_replies"] <= d["no_reply_within_timeout"] <= d["unanswered"], path
        assert d["never_answered"] == d["no_reply_within_timeout"] - d["late_replies"], path
    rest, kafka = down["rest"], down["kafka"]
    assert rest["late_replies"] == 0  # a refused connection leaves nothing behind to answer later
    assert rest["time_until_caller_learned_s"]["any_error"]["median"] < TIMEOUT_S
    assert rest["bare_tcp_connect_refused_s"]["median"] < 0.05  # the transport refuses at once
    # the Kafka caller only learns by its own time-out (the request sits in the topic)
    assert kafka["errors_by_kind"].get("timeout", 0) > 0
    assert kafka["time_until_caller_learned_s"]["timeout"]["min"] >= TIMEOUT_S * 0.99
    assert kafka["late_replies"] > 0  # answered once the responder was back, after the caller gave up

    plot_reply(result, tmp_path / "reply.png")
    assert (tmp_path / "reply.png").stat().st_size > 10_000
