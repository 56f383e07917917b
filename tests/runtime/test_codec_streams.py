"""The services' audio-stream reader, the plain-bytes splitter and the one chunk size."""

from __future__ import annotations

import numpy as np
import pytest

from audiomemory.runtime import audio, codec
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.v1 import tensor_pb2


def _audio(rate: int, frames: int, channels: int = 1, fill: float = 0.0) -> tensor_pb2.AudioChunk:
    samples = np.full((channels, frames), fill, np.float32)
    return next(audio.iter_audio_chunks(samples, rate))


def test_chunk_size_leaves_room_for_the_message_fields_under_one_mebibyte() -> None:
    assert codec.CHUNK_BYTES == (1 << 20) - 1024
    # Every default chunking uses it: a float32 tensor just over CHUNK_BYTES takes two pieces.
    arr = np.zeros(codec.CHUNK_BYTES // 4 + 1, np.float32)
    pieces = list(codec.iter_tensor_chunks(arr))
    assert [len(p.data) for p in pieces] == [codec.CHUNK_BYTES, 4]
    chunks = list(audio.iter_audio_chunks(np.zeros((1, codec.CHUNK_BYTES // 4 + 1), np.float32), 8000))
    assert [len(c.samples.data) for c in chunks] == [codec.CHUNK_BYTES, 4]


def test_reader_joins_the_chunks_at_the_streams_rate() -> None:
    reader = audio.AudioStreamReader("audio", max_seconds=1.0)
    assert not reader.started
    reader.add(_audio(8000, 300, channels=2, fill=0.25))
    assert reader.started
    reader.add(_audio(8000, 200, channels=2, fill=-0.5))
    samples, rate = reader.result()
    assert rate == 8000 and samples.shape == (2, 500) and samples.dtype == np.float32
    assert (samples[:, :300] == 0.25).all() and (samples[:, 300:] == -0.5).all()


def test_reader_caps_seconds_at_the_first_chunks_rate() -> None:
    # 0.1 s: 800 frames at 8 kHz, 1600 at 16 kHz — the cap follows the stream's own rate.
    at_8k = audio.AudioStreamReader("audio", max_seconds=0.1)
    at_8k.add(_audio(8000, 800))
    with pytest.raises(ResourceExhausted, match="limit of 800 frames"):
        at_8k.add(_audio(8000, 1))
    at_16k = audio.AudioStreamReader("audio", max_seconds=0.1)
    at_16k.add(_audio(16000, 1600))
    assert at_16k.result()[0].shape == (1, 1600)


def test_reader_has_one_limit_its_length_so_the_widest_audio_fits_exactly() -> None:
    # The byte cap follows from the length cap (stereo float32), so it can never refuse a stream the
    # length limit accepts: 0.1 s of stereo float32 at 8 kHz is accepted whole, one frame more is not.
    assert audio.max_audio_bytes(800) == 800 * 2 * 4
    reader = audio.AudioStreamReader("audio", max_seconds=0.1)
    reader.add(_audio(8000, 800, channels=2))
    with pytest.raises(ResourceExhausted, match="limit of 800 frames"):
        reader.add(_audio(8000, 1, channels=2))


def test_reader_refuses_an_empty_stream_and_a_bad_rate_with_the_services_messages() -> None:
    with pytest.raises(InvalidInput) as err:
        audio.AudioStreamReader("audio", max_seconds=1.0).result()
    assert str(err.value) == "audio: empty, the stream held no audio chunks"
    bad = audio.AudioStreamReader("audio", max_seconds=1.0)
    with pytest.raises(InvalidInput, match=r"audio\[0\].sample_rate: expected 1..384000 Hz, got 0"):
        bad.add(_audio(0, 10))


@pytest.mark.parametrize(("size", "length"), [(1, 0), (1, 3), (4, 8), (4, 9), (1000, 10), (3, 2)])
def test_iter_pieces_splits_in_order_and_marks_only_the_last(size: int, length: int) -> None:
    data = bytes(range(length))
    pieces = list(codec.iter_pieces(data, size))
    assert b"".join(p for p, _ in pieces) == data
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(0 < len(p) <= size for p, _ in pieces) or (length == 0 and pieces == [(b"", True)])
    assert len(pieces) == max(1, -(-length // size))


def test_iter_pieces_defaults_to_the_chunk_size_and_refuses_a_zero_size() -> None:
    pieces = list(codec.iter_pieces(b"\1" * (codec.CHUNK_BYTES + 1)))
    assert [len(p) for p, _ in pieces] == [codec.CHUNK_BYTES, 1]
    with pytest.raises(ValueError, match="size"):
        list(codec.iter_pieces(b"abc", 0))
