"""The ``.rhrec`` recording format: self-describing, compressed, streamable, crash-tolerant.

Layout (all integers little-endian; documented for users in ``docs/replay.md``)::

    preamble  8 bytes   b"RHREC" 0x00 <format version: 1 byte> b"\\n"
    frame     44-byte frame header + payload, repeated:
              magic b"RHFR" | kind u8 (1 header, 2 records, 3 trailer) | codec u8 (0 none, 1 zlib,
              2 zstd) | reserved u16 | count u32 | raw_len u32 | payload_len u32 |
              first_ts i64 | last_ts i64 | payload_crc32 u32 | header_crc32 u32

The first frame is the header (uncompressed JSON: format, version, created_at, source topics and
partitions). Records frames hold a compressed msgpack array of records
``[topic_index, partition, offset, timestamp_ms, key, headers, value]`` (``headers`` a list of
``[name, value]`` pairs or null). A trailer frame (uncompressed JSON: totals, why it ended) is
written on a clean stop but is optional: every frame is written whole with one ``write``, so a
recording cut by Ctrl-C or a crash is a valid prefix and a torn last frame is detected, not
misread. Each frame header carries its own CRC and the payload's CRC, so a reader can tell a bad
frame from a truncated file, skip a bad frame (``skip_bad``) and re-synchronise on the next magic.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

FORMAT_NAME = "ridehail-recording"
FORMAT_VERSION = 1
PREAMBLE_MAGIC = b"RHREC\x00"
PREAMBLE_LEN = 8
FRAME_MAGIC = b"RHFR"
FRAME_HEADER = struct.Struct("<4sBBHIIIqqII")
FRAME_HEADER_LEN = FRAME_HEADER.size  # 44
MAX_PAYLOAD = 256 * 1024 * 1024  # a frame claiming more than this is corrupt, not big

KIND_HEADER, KIND_RECORDS, KIND_TRAILER = 1, 2, 3
KIND_NAMES = {KIND_HEADER: "header", KIND_RECORDS: "records", KIND_TRAILER: "trailer"}
CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZLIB: "zlib", CODEC_ZSTD: "zstd"}
CODECS_BY_NAME = {v: k for k, v in CODEC_NAMES.items()}
RECORD_LAYOUT = ["topic_index", "partition", "offset", "timestamp_ms", "key", "headers", "value"]


class RecordingError(ValueError):
    """A recording that cannot be read; the message names the position (frame, record, byte)."""

    def __init__(
        self,
        reason: str,
        *,
        path: str = "",
        byte_offset: int | None = None,
        frame: int | None = None,
        record: int | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.byte_offset = byte_offset
        self.frame = frame
        self.record = record
        super().__init__(self._describe())

    def position(self) -> str:
        parts = []
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.record is not None:
            parts.append(f"record #{self.record}")
        if self.byte_offset is not None:
            parts.append(f"byte {self.byte_offset}")
        return ", ".join(parts)

    def _describe(self) -> str:
        where = self.position()
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{self.reason}" + (f" (at {where})" if where else "")


class Record(msgspec.Struct, array_like=True, frozen=True):
    """One Kafka record as stored: ``topic`` indexes the header's topic list."""

    topic: int
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int


@dataclass(slots=True)
class RecordingHeader:
    topics: list[TopicInfo]
    created_at: str
    codec: str
    format_version: int = FORMAT_VERSION
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "created_at": self.created_at,
            "codec": self.codec,
            "record_layout": RECORD_LAYOUT,
            "topics": [{"name": t.name, "partitions": t.partitions} for t in self.topics],
            "source": self.source,
            **({"extra": self.extra} if self.extra else {}),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RecordingHeader:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError(f"header is not a {FORMAT_NAME} header")
        topics = [TopicInfo(str(t["name"]), int(t["partitions"])) for t in doc["topics"]]
        return cls(
            topics=topics,
            created_at=str(doc.get("created_at", "")),
            codec=str(doc.get("codec", "")),
            format_version=int(doc["format_version"]),
            source=dict(doc.get("source") or {}),
            extra=dict(doc.get("extra") or {}),
        )

    def topic_names(self) -> list[str]:
        return [t.name for t in self.topics]


# -- codecs ------------------------------------------------------------------------------------------


def _zstd() -> Any:
    import zstandard  # a locked dependency; imported on first use only

    return zstandard


def default_codec() -> str:
    return "zstd"


class _Compressor:
    def __init__(self, codec: str, level: int | None) -> None:
        if codec not in CODECS_BY_NAME:
            raise ValueError(f"unknown codec {codec!r} (choose from {sorted(CODECS_BY_NAME)})")
        self.codec = codec
        self.code = CODECS_BY_NAME[codec]
        if codec == "zstd":
            self._zc = _zstd().ZstdCompressor(level=3 if level is None else level)
        self._level = 6 if level is None else level

    def compress(self, data: bytes) -> bytes:
        if self.code == CODEC_ZSTD:
            return bytes(self._zc.compress(data))
        if self.code == CODEC_ZLIB:
            return zlib.compress(data, self._level)
        return data


class _Decompressor:
    def __init__(self) -> None:
        self._zd: Any = None

    def decompress(self, code: int, data: bytes, raw_len: int) -> bytes:
        if code == CODEC_NONE:
            return data
        if code == CODEC_ZLIB:
            return zlib.decompress(data)
        if code == CODEC_ZSTD:
            if self._zd is None:
                self._zd = _zstd().ZstdDecompressor()
            return bytes(self._zd.decompress(data, max_output_size=raw_len))
        raise ValueError(f"unknown codec id {code}")


# -- frames ------------------------------------------------------------------------------------------


def pack_frame(kind: int, codec: int, count: int, raw_len: int, payload: bytes, first_ts: int, last_ts: int) -> bytes:
    head = FRAME_HEADER.pack(
        FRAME_MAGIC, kind, codec, 0, count, raw_len, len(payload), first_ts, last_ts, zlib.crc32(payload), 0
    )
    header_crc = zlib.crc32(head[: FRAME_HEADER_LEN - 4])
    return head[: FRAME_HEADER_LEN - 4] + struct.pack("<I", header_crc) + payload


@dataclass(slots=True)
class FrameHeader:
    kind: int
    codec: int
    count: int
    raw_len: int
    payload_len: int
    first_ts: int
    last_ts: int
    payload_crc: int

    @classmethod
    def parse(cls, data: bytes) -> FrameHeader | str:
        """The header, or the reason it is not a valid frame header."""
        magic, kind, codec, _, count, raw_len, plen, first_ts, last_ts, pcrc, hcrc = FRAME_HEADER.unpack(data)
        if magic != FRAME_MAGIC:
            return f"bad frame magic {magic!r}"
        if zlib.crc32(data[: FRAME_HEADER_LEN - 4]) != hcrc:
            return "frame header checksum mismatch"
        if kind not in KIND_NAMES:
            return f"unknown frame kind {kind}"
        if codec not in CODEC_NAMES:
            return f"unknown codec id {codec}"
        if plen > MAX_PAYLOAD or raw_len > MAX_PAYLOAD:
            return f"implausible frame size {plen}"
        return cls(kind, codec, count, raw_len, plen, first_ts, last_ts, pcrc)


@dataclass(slots=True)
class Frame:
    """A frame read from a file: ``index`` counts frames from 0 (the header frame)."""

    index: int
    byte_offset: int
    header: FrameHeader
    first_record: int  # global number of its first record (records counted from 0)
    records: list[Record]


@dataclass(slots=True)
class SkipReport:
    """What ``skip_bad`` passed over, with one message per problem."""

    frames: int = 0
    records: int = 0
    records_unknown: bool = False  # bytes skipped while re-synchronising hold an unknown number
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.frames or self.records or self.bytes)

    def summary(self) -> str:
        if not self:
            return "nothing skipped"
        recs = f"{self.records}{'+' if self.records_unknown else ''} record(s)"
        return f"skipped {recs} in {self.frames} bad frame(s), {self.bytes} byte(s)"


_records_decoder = msgspec.msgpack.Decoder(list[Record])
_raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(Record)


class RecordingReader:
    """Streams frames and records from a recording without holding more than one frame in memory.

    Strict by default: the first problem raises :class:`RecordingError` naming its position. With
    ``skip_bad=True`` bad frames and bad records are skipped and counted in :attr:`skipped`.
    """

    def __init__(self, path: str | Path, *, skip_bad: bool = False) -> None:
        self.path = str(path)
        self.skip_bad = skip_bad
        self.skipped = SkipReport()
        self.trailer: dict[str, Any] | None = None
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        self._size = os.fstat(self._file.fileno()).st_size
        self._decompressor = _Decompressor()
        self._pos = 0
        try:
            self.header = self._read_preamble_and_header()
        except BaseException:
            self._file.close()
            raise
        self._ntopics = len(self.header.topics)

    # -- plumbing ------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    @property
    def position(self) -> int:
        """Bytes consumed so far (for progress bars)."""
        return self._pos

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _error(self, reason: str, **where: Any) -> RecordingError:
        return RecordingError(reason, path=self.path, **where)

    def _read(self, n: int) -> bytes:
        data = self._file.read(n)
        self._pos += len(data)
        return data

    # -- header ----------------------------------------------------------------------------------------
    def _read_preamble_and_header(self) -> RecordingHeader:
        pre = self._read(PREAMBLE_LEN)
        if len(pre) < PREAMBLE_LEN or not pre.startswith(PREAMBLE_MAGIC) or pre[7:8] != b"\n":
            raise self._error("not a ridehail recording (bad magic)", byte_offset=0)
        version = pre[6]
        if version != FORMAT_VERSION:
            raise self._error(
                f"unknown format version {version} (this ridehail reads version {FORMAT_VERSION})",
                byte_offset=6,
            )
        head = self._read(FRAME_HEADER_LEN)
        if len(head) < FRAME_HEADER_LEN:
            raise self._error("truncated file: no header frame", byte_offset=PREAMBLE_LEN, frame=0)
        fh = FrameHeader.parse(head)
        if isinstance(fh, str) or fh.kind != KIND_HEADER:
            reason = fh if isinstance(fh, str) else f"first frame is a {KIND_NAMES[fh.kind]} frame"
            raise self._error(f"bad header frame: {reason}", byte_offset=PREAMBLE_LEN, frame=0)
        payload = self._read(fh.payload_len)
        if len(payload) < fh.payload_len:
            raise self._error("truncated file inside the header frame", byte_offset=PREAMBLE_LEN, frame=0)
        if zlib.crc32(payload) != fh.payload_crc:
            raise self._error("header frame checksum mismatch", byte_offset=PREAMBLE_LEN, frame=0)
        try:
            header = RecordingHeader.from_json(self._decompressor.decompress(fh.codec, payload, fh.raw_len))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(f"bad header: {exc}", byte_offset=PREAMBLE_LEN, frame=0) from None
        if header.format_version != FORMAT_VERSION:
            raise self._error(
                f"unknown format version {header.format_version} (this ridehail reads {FORMAT_VERSION})",
                byte_offset=PREAMBLE_LEN,
                frame=0,
            )
        return header

    # -- frames ----------------------------------------------------------------------------------------
    def frames(self, want: Callable[[FrameHeader], bool] | None = None) -> Iterator[Frame]:
        """Records frames in file order. The trailer, when present, lands in :attr:`trailer`.

        ``want`` may decline a frame by its header (e.g. its time range) so it is not decoded.
        """
        index = 1
        next_record = 0
        while True:
            start = self._pos
            head = self._read(FRAME_HEADER_LEN)
            if not head:
                return  # clean end of file (trailer or not: a cut recording is a valid prefix)
            if len(head) < FRAME_HEADER_LEN:
                self._bad_tail(start, index, f"truncated file: {len(head)}-byte partial frame header")
                return
            fh = FrameHeader.parse(head)
            if isinstance(fh, str):
                if not self.skip_bad:
                    raise self._error(f"corrupted frame: {fh}", byte_offset=start, frame=index, record=next_record)
                if not self._resync(start, index, fh):
                    return
                index += 1
                continue
            payload = self._read(fh.payload_len)
            if len(payload) < fh.payload_len:
                self._bad_tail(
                    start,
                    index,
                    f"truncated file: frame needs {fh.payload_len} payload bytes, {len(payload)} left",
                    fh.count if fh.kind == KIND_RECORDS else 0,
                    next_record,
                )
                return
            if fh.kind == KIND_TRAILER:
                with contextlib.suppress(ValueError):
                    self.trailer = json.loads(payload) if zlib.crc32(payload) == fh.payload_crc else None
                index += 1
                continue
            if fh.kind != KIND_RECORDS:
                self._bad_frame(start, index, next_record, fh.count, f"unexpected {KIND_NAMES[fh.kind]} frame")
                index += 1
                continue
            if want is not None and not want(fh):
                next_record += fh.count
                index += 1
                continue
            records = self._decode_records(fh, payload, start, index, next_record)
            if records is not None:
                yield Frame(index, start, fh, next_record, records)
            next_record += fh.count
            index += 1

    def records(self) -> Iterator[Record]:
        for frame in self.frames():
            yield from frame.records

    def _decode_records(
        self, fh: FrameHeader, payload: bytes, start: int, index: int, first_record: int
    ) -> list[Record] | None:
        if zlib.crc32(payload) != fh.payload_crc:
            self._bad_frame(start, index, first_record, fh.count, "corrupted frame: payload checksum mismatch")
            return None
        try:
            raw = self._decompressor.decompress(fh.codec, payload, fh.raw_len)
        except Exception as exc:  # each codec raises its own error type
            self._bad_frame(start, index, first_record, fh.count, f"bad compressed frame: {exc}")
            return None
        try:
            records = _records_decoder.decode(raw)
        except msgspec.DecodeError:
            return self._decode_one_by_one(raw, start, index, first_record, fh.count)
        if len(records) != fh.count:
            self._bad_frame(
                start, index, first_record, fh.count, f"frame says {fh.count} records but holds {len(records)}"
            )
            return None
        n = self._ntopics
        if any(not 0 <= rec.topic < n or rec.partition < 0 for rec in records):
            return self._decode_one_by_one(raw, start, index, first_record, fh.count)
        return records

    def _decode_one_by_one(
        self, raw: bytes, start: int, index: int, first_record: int, count: int
    ) -> list[Record] | None:
        try:
            items = _raw_list_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            self._bad_frame(start, index, first_record, count, f"bad frame contents: {exc}")
            return None
        good: list[Record] = []
        for i, item in enumerate(items):
            try:
                rec = _record_decoder.decode(item)
                if not 0 <= rec.topic < self._ntopics:
                    raise ValueError(f"topic index {rec.topic} out of range (header lists {self._ntopics})")
                if rec.partition < 0:
                    raise ValueError(f"negative partition {rec.partition}")
            except (msgspec.DecodeError, ValueError) as exc:
                err = self._error(
                    f"bad record {i} of frame: {exc}", byte_offset=start, frame=index, record=first_record + i
                )
                if not self.skip_bad:
                    raise err from None
                self.skipped.records += 1
                self.skipped.problems.append(str(err))
                continue
            good.append(rec)
        return good

    # -- problems --------------------------------------------------------------------------------------
    def _bad_frame(self, start: int, index: int, first_record: int, count: int, reason: str) -> None:
        err = self._error(reason, byte_offset=start, frame=index, record=first_record)
        if not self.skip_bad:
            raise err
        self.skipped.frames += 1
        self.skipped.records += count
        self.skipped.problems.append(str(err) + f": skipped its {count} record(s)")

    def _bad_tail(self, start: int, index: int, reason: str, count: int = 0, first_record: int | None = None) -> None:
        err = self._error(reason, byte_offset=start, frame=index, record=first_record)
        if not self.skip_bad:
            raise err
        self.skipped.frames += 1
        self.skipped.records += count
        self.skipped.bytes += self._size - start
        self.skipped.problems.append(str(err) + f": skipped the last {self._size - start} byte(s)")

    def _resync(self, start: int, index: int, reason: str) -> bool:
        """After a corrupted frame header, scan for the next valid one; False at end of file."""
        search_from = start + 1
        chunk = 1 << 20
        while search_from < self._size:
            self._file.seek(search_from)
            block = self._file.read(chunk + FRAME_HEADER_LEN)
            at = 0
            while True:
                hit = block.find(FRAME_MAGIC, at)
                if hit < 0 or hit + FRAME_HEADER_LEN > len(block):
                    break
                if not isinstance(FrameHeader.parse(block[hit : hit + FRAME_HEADER_LEN]), str):
                    found = search_from + hit
                    self._note_resync(start, index, reason, found - start)
                    self._file.seek(found)
                    self._pos = found
                    return True
                at = hit + 1
            if len(block) <= FRAME_HEADER_LEN:
                break
            search_from += chunk
        self._note_resync(start, index, reason, self._size - start)
        self._file.seek(self._size)
        self._pos = self._size
        return False

    def _note_resync(self, start: int, index: int, reason: str, skipped: int) -> None:
        self.skipped.frames += 1
        self.skipped.bytes += skipped
        self.skipped.records_unknown = True
        err = self._error(f"corrupted frame: {reason}", byte_offset=start, frame=index)
        self.skipped.problems.append(f"{err}: skipped {skipped} byte(s) to the next valid frame")


def read_trailer(path: str | Path) -> dict[str, Any] | None:
    """The trailer of a cleanly closed recording (from its last bytes), else None. Cheap: no scan."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        tail_len = min(size, 64 * 1024)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
    at = tail.rfind(FRAME_MAGIC)
    while at >= 0:
        head = tail[at : at + FRAME_HEADER_LEN]
        if len(head) == FRAME_HEADER_LEN:
            fh = FrameHeader.parse(head)
            if not isinstance(fh, str) and fh.kind == KIND_TRAILER:
                payload = tail[at + FRAME_HEADER_LEN : at + FRAME_HEADER_LEN + fh.payload_len]
                if len(payload) == fh.payload_len and zlib.crc32(payload) == fh.payload_crc:
                    with contextlib.suppress(ValueError):
                        doc = json.loads(payload)
                        return doc if isinstance(doc, dict) else None
                return None
        at = tail.rfind(FRAME_MAGIC, 0, at)
    return None


# -- writing -----------------------------------------------------------------------------------------


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
