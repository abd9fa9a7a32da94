"""Writing ``.rhrec`` recordings (the format: :mod:`ridehail.replay.fileformat`): every frame is written
whole, so a recording cut by Ctrl-C or a crash is a valid prefix."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from ridehail.replay.fileformat import (
    CODEC_NONE,
    FORMAT_VERSION,
    KIND_HEADER,
    KIND_RECORDS,
    KIND_TRAILER,
    PREAMBLE_MAGIC,
    RecordingHeader,
    TopicInfo,
    _Compressor,
    default_codec,
    pack_frame,
)

_encoder = msgspec.msgpack.Encoder()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RecordingWriter:
    """Appends records in compressed frames; every frame lands whole, so the file is always valid.

    A frame is written when ``frame_records`` records or ``frame_bytes`` value bytes are buffered,
    or when the caller calls :meth:`flush` (the recorder does every second).
    """

    def __init__(
        self,
        path: str | Path,
        topics: list[TopicInfo],
        *,
        codec: str | None = None,
        level: int | None = None,
        source: dict[str, Any] | None = None,
        frame_records: int = 8192,
        frame_bytes: int = 1 << 20,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = str(path)
        self._compressor = _Compressor(codec or default_codec(), level)
        self.header = RecordingHeader(
            topics=list(topics),
            created_at=utc_now_iso(),
            codec=self._compressor.codec,
            source=source or {},
            extra=extra or {},
        )
        self._index = {t.name: i for i, t in enumerate(topics)}
        self._frame_records = frame_records
        self._frame_bytes = frame_bytes
        self._buffer: list[tuple[Any, ...]] = []
        self._buffer_bytes = 0
        self._first_ts: int | None = None
        self._last_ts: int | None = None
        self.records = 0
        self.frames = 0
        self.bytes_written = 0
        self.closed = False
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        meta = self.header.to_json()
        self._write(PREAMBLE_MAGIC + bytes([FORMAT_VERSION]) + b"\n")
        self._write(pack_frame(KIND_HEADER, CODEC_NONE, 0, len(meta), meta, 0, 0))

    def topic_index(self, name: str) -> int:
        return self._index[name]

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self.bytes_written += len(data)

    def add(
        self,
        topic: int,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        value: bytes | None,
    ) -> None:
        self._buffer.append((topic, partition, offset, timestamp, key, headers or None, value))
        self._buffer_bytes += (len(value) if value else 0) + (len(key) if key else 0) + 24
        if len(self._buffer) >= self._frame_records or self._buffer_bytes >= self._frame_bytes:
            self.flush()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        """Write the buffered records as one frame (no-op when empty)."""
        if not self._buffer:
            return
        raw = _encoder.encode(self._buffer)
        payload = self._compressor.compress(raw)
        stamps = [r[3] for r in self._buffer]
        first, last = min(stamps), max(stamps)
        self._write(pack_frame(KIND_RECORDS, self._compressor.code, len(self._buffer), len(raw), payload, first, last))
        self.records += len(self._buffer)
        self.frames += 1
        self._first_ts = first if self._first_ts is None else min(self._first_ts, first)
        self._last_ts = last if self._last_ts is None else max(self._last_ts, last)
        self._buffer.clear()
        self._buffer_bytes = 0

    def close(self, ended: str = "end", **extra: Any) -> None:
        """Flush, write the trailer, sync to disk. Safe to call twice."""
        if self.closed:
            return
        self.flush()
        trailer = {
            "records": self.records,
            "frames": self.frames,
            "first_ts": self._first_ts,
            "last_ts": self._last_ts,
            "ended": ended,
            "closed_at": utc_now_iso(),
            **extra,
        }
        body = json.dumps(trailer, sort_keys=True).encode()
        self._write(pack_frame(KIND_TRAILER, CODEC_NONE, 0, len(body), body, 0, 0))
        with contextlib.suppress(OSError):
            os.fsync(self._file.fileno())
        self._file.close()
        self.closed = True

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
