"""Hostile .rhrec files: a frame never decompresses beyond the size it declares (a small file must
not allocate gigabytes), the error names the frame and its byte offset, and a fuzzed file gives
either records or a RecordingError, nothing else (hypothesis, bounded examples)."""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ridehail.replay.fileformat import CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD, KIND_RECORDS, RecordingError, pack_frame
from ridehail.replay.recording_reader import RecordingReader
from tests.unit.test_replay_format import read_all, sample_records, write

BOMB = 64 * 1024 * 1024  # what the hostile frame really holds: 64 MiB of zeros, a few KB compressed


def _insert_frame(path: Path, codec: int, payload: bytes, raw_len: int, count: int = 1) -> int:
    data = path.read_bytes()
    at = data.rfind(b"RHFR")  # before the trailer
    path.write_bytes(data[:at] + pack_frame(KIND_RECORDS, codec, count, raw_len, payload, 0, 0) + data[at:])
    return at


def _peak_while(fn: object) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        caught = None
    except Exception as exc:
        caught = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return caught, peak


BOMBS = {
    "zlib": (CODEC_ZLIB, zlib.compress(bytes(BOMB), 9)),
    # zstd's frame declares its content size (64 MiB): trusting it allocates that much at once
    "zstd": (CODEC_ZSTD, zstandard.ZstdCompressor(level=3).compress(bytes(BOMB))),
    # no content size in the frame: only a streaming read with a cap stops it
    "zstd-unsized": (CODEC_ZSTD, zstandard.ZstdCompressor(level=3, write_content_size=False).compress(bytes(BOMB))),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_frame_never_decompresses_beyond_its_declared_size(tmp_path: Path, name: str) -> None:
    codec, payload = BOMBS[name]
    assert len(payload) < 300_000
    path = tmp_path / f"{name}.rhrec"
    write(path, sample_records(50), frame_records=50)
    at = _insert_frame(path, codec, payload, raw_len=1000)
    caught, peak = _peak_while(lambda: read_all(path))
    assert isinstance(caught, RecordingError), caught
    assert "declared" in caught.reason and caught.frame == 2 and caught.byte_offset == at
    assert peak < 8 * 1024 * 1024, f"reading the frame allocated {peak / 2**20:.0f} MiB"
    got, reader = read_all(path, skip_bad=True)  # skipping it keeps the rest
    assert len(got) == 50 and reader.skipped.frames == 1


def test_a_frame_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.rhrec"
    write(path, sample_records(10), frame_records=10)
    _insert_frame(path, CODEC_ZLIB, zlib.compress(b"\x91\x97" + b"\x00" * 10), raw_len=5000)
    with pytest.raises(RecordingError, match="declared"):
        read_all(path)
    _insert_frame(path, CODEC_NONE, b"\x90", raw_len=5000)
    with pytest.raises(RecordingError, match="declared"):
        read_all(path)


def test_an_implausible_declared_size_is_a_corrupt_frame(tmp_path: Path) -> None:
    path = tmp_path / "huge.rhrec"
    write(path, sample_records(10), frame_records=10)
    _insert_frame(path, CODEC_ZLIB, zlib.compress(b"x"), raw_len=2**31)
    with pytest.raises(RecordingError, match="implausible"):
        read_all(path)


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("rec") / "s.rhrec"
    write(path, sample_records(120), codec="zstd", frame_records=40)
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_fuzzed_recording_reads_or_fails_clearly(tmp_path: Path, sample_file: bytes, data: st.DataObject) -> None:
    raw = bytearray(sample_file)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if op == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at : at + data.draw(st.integers(1, 64))]
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        else:
            raw[at : at + 4] = b"\x00\x00\x00\x00"
        if not raw:
            raw = bytearray(b"RH")
    path = tmp_path / "fuzz.rhrec"
    path.write_bytes(bytes(raw))
    for skip_bad in (False, True):
        try:
            with RecordingReader(path, skip_bad=skip_bad) as reader:
                for _ in reader.records():
                    pass
        except RecordingError as exc:
            assert exc.reason
            assert not skip_bad or exc.frame in (0, None) or exc.byte_offset is not None
