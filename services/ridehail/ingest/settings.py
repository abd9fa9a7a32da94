"""Ingestion edge settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ridehail.common.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_mode: Literal["rest", "rest-kafka"] = Field(
        default="rest",
        description="rest: write each ping to Postgres, answer 200; rest-kafka: produce it to the broker, answer 202.",
    )
    ingest_ack: Literal["broker", "enqueue"] = Field(
        default="broker",
        description="rest-kafka: answer 202 once the broker acked (broker) or once queued in the producer (enqueue).",
    )
    ingest_db_pool_size: int = Field(
        default=16, ge=1, le=200, description="rest: Postgres connections the edge keeps (one statement per request)."
    )
    ingest_timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=120.0,
        description="Longest a request waits for Postgres (rest) or the broker's ack (rest-kafka) before a 503.",
    )
    ingest_retry_after_s: int = Field(
        default=1, ge=0, le=3600, description="Retry-After seconds sent with a 503 when Postgres or the broker is down."
    )
    ingest_max_body_bytes: int = Field(
        default=4096, ge=256, le=1_048_576, description="Largest accepted ping body; larger ones get 413."
    )
    ingest_max_batch: int = Field(
        default=500, ge=1, le=10_000, description="Most pings accepted in one POST /ingest/pings; more get 413."
    )
    ingest_max_batch_body_bytes: int = Field(
        default=262_144,
        ge=1024,
        le=16_777_216,
        description="Largest accepted POST /ingest/pings body (the ping limit covers every other route); "
        "larger get 413.",
    )
    ingest_group_commit_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="rest: single-ping requests arriving within this many ms are written in one upsert statement "
        "and each answered after that commit (0 = off: one statement per request).",
    )
    ingest_group_commit_max: int = Field(
        default=1000, ge=1, le=100_000, description="rest: a group commit is written at once when it holds this many."
    )
    ingest_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes serving the port (SO_REUSEPORT); the first starts the others as its children.",
    )
    ingest_worker_index: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Set by the edge for the worker processes it starts (0 = the first process); not for operators.",
    )
