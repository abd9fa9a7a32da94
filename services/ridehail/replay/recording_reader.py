"""Reading ``.rhrec`` recordings (the format: :mod:`ridehail.replay.fileformat`): frames and records
streamed one frame at a time, strict by default or skipping bad frames."""

from __future__ import annotations

import contextlib
import io
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from ridehail.replay.fileformat import (
    FORMAT_VERSION,
    FRAME_HEADER_LEN,
    FRAME_MAGIC,
    KIND_HEADER,
    KIND_NAMES,
    KIND_RECORDS,
    KIND_TRAILER,
    PREAMBLE_LEN,
    PREAMBLE_MAGIC,
    Frame,
    FrameHeader,
    Record,
    RecordingError,
    RecordingHeader,
    SkipReport,
    _Decompressor,
    raw_list_decoder,
    record_decoder,
    records_decoder,
)


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
            records = records_decoder.decode(raw)
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
            items = raw_list_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            self._bad_frame(start, index, first_record, count, f"bad frame contents: {exc}")
            return None
        good: list[Record] = []
        for i, item in enumerate(items):
            try:
                rec = record_decoder.decode(item)
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
