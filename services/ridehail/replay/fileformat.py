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

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

FORMAT_NAME = "ridehail-recording"
FORMAT_VERSION = 1
PREAMBLE_MAGIC = b"RHREC\x00"
PREAMBLE_LEN = 8
FRAME_MAGIC = b"RHFR"
FRAME_HEADER = struct.Struct("<4sBBHIIIqqII")
FRAME_HEADER_LEN = FRAME_HEADER.size  # 44
MAX_PAYLOAD = 256 * 1024 * 1024  # a frame claiming more than this is corrupt, not big
# The writer closes a frame at ~1 MiB of values (plus one record): a frame declaring more raw bytes
# than this is corrupt or hostile, and reading it would cost that much memory.
MAX_RAW_FRAME = 64 * 1024 * 1024

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


class FrameSizeError(ValueError):
    """A frame's payload does not decompress to exactly the size its header declares."""


class _Decompressor:
    """Decompresses a frame to exactly its declared ``raw_len``, never further: a few KB crafted to
    expand to gigabytes stop at ``raw_len`` + 1 bytes of output (zlib) or before any output (a
    zstd frame whose own header claims more), so reading costs at most what the frame declares."""

    def __init__(self) -> None:
        self._zd: Any = None

    def decompress(self, code: int, data: bytes, raw_len: int) -> bytes:
        if code == CODEC_NONE:
            out = data
        elif code == CODEC_ZLIB:
            out = self._zlib(data, raw_len)
        elif code == CODEC_ZSTD:
            out = self._zstandard(data, raw_len)
        else:
            raise ValueError(f"unknown codec id {code}")
        if len(out) != raw_len:
            raise FrameSizeError(f"frame holds {len(out)} bytes, its header declared {raw_len}")
        return out

    @staticmethod
    def _zlib(data: bytes, raw_len: int) -> bytes:
        d = zlib.decompressobj()
        out = d.decompress(data, raw_len)
        if d.unconsumed_tail and d.decompress(d.unconsumed_tail, 1):
            raise FrameSizeError(f"frame decompresses beyond its declared size of {raw_len} bytes")
        if not d.eof:
            raise ValueError("truncated zlib stream")
        return out

    def _zstandard(self, data: bytes, raw_len: int) -> bytes:
        zstd = _zstd()
        declared = zstd.frame_content_size(data)  # -1 when the zstd frame does not say
        if declared > raw_len:
            raise FrameSizeError(f"frame decompresses to {declared} bytes, beyond its declared size of {raw_len}")
        if self._zd is None:
            self._zd = zstd.ZstdDecompressor()
        chunks: list[bytes] = []
        total = 0
        with self._zd.stream_reader(data, read_across_frames=True) as reader:
            while total <= raw_len:
                chunk = reader.read(raw_len + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        if total > raw_len:
            raise FrameSizeError(f"frame decompresses beyond its declared size of {raw_len} bytes")
        return b"".join(chunks)


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
        if plen > MAX_PAYLOAD or raw_len > MAX_RAW_FRAME:
            return f"implausible frame size {plen} (raw {raw_len})"
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


records_decoder = msgspec.msgpack.Decoder(list[Record])
raw_list_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
record_decoder = msgspec.msgpack.Decoder(Record)
