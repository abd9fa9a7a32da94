"""The .rhrec format: round trips, and every kind of bad input gives a clear error with its position."""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ridehail.replay.fileformat import (
    CODEC_ZLIB,
    FRAME_HEADER_LEN,
    KIND_RECORDS,
    PREAMBLE_LEN,
    Record,
    RecordingError,
    TopicInfo,
    pack_frame,
)
from ridehail.replay.recording_reader import RecordingReader, read_trailer
from ridehail.replay.recording_writer import RecordingWriter

try:
    import zstandard  # noqa: F401

    CODECS = ["zstd", "zlib", "none"]
except ModuleNotFoundError:  # zstd is optional: recordings fall back to zlib without it
    CODECS = ["zlib", "none"]

TOPICS = [TopicInfo("ridehail.driver.location.v1", 12), TopicInfo("ridehail.ride.event.v1", 6)]


def sample_records(n: int) -> list[Record]:
    out = []
    for i in range(n):
        key = None if i % 4 == 0 else f"driver-{i % 9}".encode()
        headers = None if i % 3 else [("trace", f"t{i}".encode()), ("empty", None), ("bin", bytes([0, 255, i % 256]))]
        value = None if i % 11 == 5 else b'{"type":"driver.location","ts":%d,"seq":%d}' % (1_700_000_000_000 + i, i)
        out.append(Record(i % 2, i % 6, i, 1_700_000_000_000 + i * 10, key, headers, value))
    return out


def write(path: Path, records: list[Record], codec: str = CODECS[0], frame_records: int = 100) -> list[int]:
    """Write records; return the byte offset of every records frame."""
    with RecordingWriter(path, TOPICS, codec=codec, frame_records=frame_records) as w:
        for r in records:
            w.add(r.topic, r.partition, r.offset, r.timestamp, r.key, r.headers, r.value)
    with RecordingReader(path) as reader:
        return [f.byte_offset for f in reader.frames()]


def read_all(path: Path, skip_bad: bool = False) -> tuple[list[Record], RecordingReader]:
    reader = RecordingReader(path, skip_bad=skip_bad)
    with reader:
        return list(reader.records()), reader


def normalised(records: list[Record]) -> list[Record]:
    """Empty header lists are stored as null (what Kafka gives back for "no headers")."""
    return [msgspec.structs.replace(r, headers=r.headers or None) for r in records]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_keeps_keys_headers_nulls_and_order(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "r.rhrec"
    records = sample_records(1000)
    offsets = write(path, records, codec=codec)
    assert len(offsets) == 10
    got, reader = read_all(path)
    assert got == normalised(records)
    assert reader.header.topics == TOPICS
    assert reader.header.codec == codec
    assert reader.trailer is not None and reader.trailer["records"] == 1000
    assert read_trailer(path) == reader.trailer
    assert not reader.skipped


def test_empty_recording_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.rhrec"
    with RecordingWriter(path, TOPICS):
        pass
    got, reader = read_all(path)
    assert got == []
    assert reader.trailer is not None and reader.trailer["records"] == 0


def test_recording_without_trailer_is_a_valid_prefix(tmp_path: Path) -> None:
    """What Ctrl-C or a crash leaves: whole frames, no trailer."""
    path = tmp_path / "cut.rhrec"
    records = sample_records(250)
    w = RecordingWriter(path, TOPICS, frame_records=100)
    for r in records:
        w.add(r.topic, r.partition, r.offset, r.timestamp, r.key, r.headers, r.value)
    w.flush()  # the process dies here: the file is never closed properly
    got, reader = read_all(path)
    assert got == normalised(records)
    assert reader.trailer is None
    assert read_trailer(path) is None


def test_truncated_file_names_the_frame_and_skip_bad_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "t.rhrec"
    records = sample_records(300)
    offsets = write(path, records, frame_records=100)
    data = path.read_bytes()
    cut = offsets[2] + FRAME_HEADER_LEN + 10  # inside the third records frame's payload
    path.write_bytes(data[:cut])
    with pytest.raises(RecordingError) as err:
        read_all(path)
    assert err.value.frame == 3 and err.value.byte_offset == offsets[2] and err.value.record == 200
    assert "truncated file" in str(err.value) and f"byte {offsets[2]}" in str(err.value)
    got, reader = read_all(path, skip_bad=True)
    assert got == normalised(records[:200])
    assert reader.skipped.records == 100 and reader.skipped.frames == 1 and reader.skipped.bytes == cut - offsets[2]


def test_truncated_inside_a_frame_header(tmp_path: Path) -> None:
    path = tmp_path / "t.rhrec"
    offsets = write(path, sample_records(200), frame_records=100)
    path.write_bytes(path.read_bytes()[: offsets[1] + 7])
    with pytest.raises(RecordingError, match="partial frame header") as err:
        read_all(path)
    assert err.value.byte_offset == offsets[1]
    got, reader = read_all(path, skip_bad=True)
    assert len(got) == 100 and reader.skipped.bytes == 7


def test_corrupted_payload_is_detected_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c.rhrec"
    records = sample_records(300)
    offsets = write(path, records, frame_records=100)
    data = bytearray(path.read_bytes())
    data[offsets[1] + FRAME_HEADER_LEN + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="payload checksum mismatch") as err:
        read_all(path)
    assert (err.value.frame, err.value.record, err.value.byte_offset) == (2, 100, offsets[1])
    got, reader = read_all(path, skip_bad=True)
    assert got == normalised(records[:100] + records[200:])
    assert reader.skipped.records == 100 and reader.skipped.frames == 1
    assert "frame 2" in reader.skipped.problems[0]


def test_corrupted_frame_header_resynchronises_on_the_next_frame(tmp_path: Path) -> None:
    path = tmp_path / "h.rhrec"
    records = sample_records(400)
    offsets = write(path, records, frame_records=100)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 10] ^= 0x55  # inside the header of the second records frame
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="frame header checksum mismatch") as err:
        read_all(path)
    assert err.value.byte_offset == offsets[1]
    got, reader = read_all(path, skip_bad=True)
    assert got == normalised(records[:100] + records[200:])
    assert reader.skipped.records_unknown and reader.skipped.bytes == offsets[2] - offsets[1]
    assert reader.trailer is not None


def _append_frame(path: Path, payload_raw: bytes, count: int, compress: bool = True) -> int:
    """Append a hand-made records frame (valid checksums) before the trailer; return its offset."""
    data = path.read_bytes()
    trailer_at = data.rfind(b"RHFR")
    payload = zlib.compress(payload_raw) if compress else payload_raw
    frame = pack_frame(KIND_RECORDS, CODEC_ZLIB, count, len(payload_raw), payload, 0, 0)
    path.write_bytes(data[:trailer_at] + frame + data[trailer_at:])
    return trailer_at


def test_bad_compressed_frame(tmp_path: Path) -> None:
    path = tmp_path / "z.rhrec"
    write(path, sample_records(100), frame_records=100)
    at = _append_frame(path, b"this is not zlib data at all", 3, compress=False)
    with pytest.raises(RecordingError, match="bad compressed frame") as err:
        read_all(path)
    assert err.value.byte_offset == at and err.value.frame == 2
    got, reader = read_all(path, skip_bad=True)
    assert len(got) == 100 and reader.skipped.records == 3


def test_bad_record_names_its_number_and_skip_bad_skips_only_it(tmp_path: Path) -> None:
    path = tmp_path / "b.rhrec"
    write(path, sample_records(100), frame_records=100)
    good = [0, 1, 7, 1_700_000_000_000, b"k", None, b"{}"]
    bad_partition = [0, "one", 8, 1_700_000_000_001, b"k", None, b"{}"]
    bad_topic = [5, 1, 9, 1_700_000_000_002, b"k", None, b"{}"]
    raw = msgspec.msgpack.encode([good, bad_partition, good, bad_topic])
    at = _append_frame(path, raw, 4)
    with pytest.raises(RecordingError, match="bad record 1 of frame") as err:
        read_all(path)
    assert (err.value.frame, err.value.record, err.value.byte_offset) == (2, 101, at)
    got, reader = read_all(path, skip_bad=True)
    assert len(got) == 102
    assert reader.skipped.records == 2 and reader.skipped.frames == 0
    assert any("topic index 5 out of range" in p for p in reader.skipped.problems)


def test_unknown_format_version(tmp_path: Path) -> None:
    path = tmp_path / "v.rhrec"
    write(path, sample_records(10))
    data = bytearray(path.read_bytes())
    data[6] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="unknown format version 9") as err:
        RecordingReader(path)
    assert err.value.byte_offset == 6


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "x.rhrec"
    path.write_text('{"topic": "a"}\n')
    with pytest.raises(RecordingError, match="not a ridehail recording") as err:
        RecordingReader(path)
    assert err.value.byte_offset == 0


def test_bad_header_frame(tmp_path: Path) -> None:
    path = tmp_path / "hd.rhrec"
    write(path, sample_records(10))
    data = bytearray(path.read_bytes())
    data[PREAMBLE_LEN + FRAME_HEADER_LEN + 3] ^= 0x20  # inside the header JSON
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="header frame checksum mismatch") as err:
        RecordingReader(path, skip_bad=True)  # no skipping past a bad header: nothing to trust
    assert err.value.frame == 0


def test_frames_can_be_declined_by_header_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "w.rhrec"
    records = sample_records(300)
    write(path, records, frame_records=100)
    with RecordingReader(path) as reader:
        kept = list(reader.frames(lambda fh: fh.first_ts >= records[100].timestamp))
    assert [f.first_record for f in kept] == [100, 200]
    assert [r for f in kept for r in f.records] == normalised(records[100:])


header_names = st.text(min_size=1, max_size=12)
records_strategy = st.lists(
    st.builds(
        Record,
        topic=st.integers(0, len(TOPICS) - 1),
        partition=st.integers(0, 11),
        offset=st.integers(0, 2**62),
        timestamp=st.integers(0, 2**53),
        key=st.none() | st.binary(max_size=40),
        headers=st.none() | st.lists(st.tuples(header_names, st.none() | st.binary(max_size=20)), max_size=4),
        value=st.none() | st.binary(max_size=300),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records_strategy, frame_records=st.integers(1, 50), codec=st.sampled_from(CODECS))
def test_round_trip_property(tmp_path: Path, records: list[Record], frame_records: int, codec: str) -> None:
    path = tmp_path / "p.rhrec"
    write(path, records, codec=codec, frame_records=frame_records)
    got, reader = read_all(path)
    assert got == normalised(records)
    assert reader.trailer is not None and reader.trailer["records"] == len(records)
