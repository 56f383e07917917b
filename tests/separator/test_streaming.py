"""Separate as a stream over real gRPC (tiny HTDemucs): blocks in time order, interleaved per stem, equal to
the whole-song answer; the stem list; the place in line while waiting; whole-song lengths."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import served

from audiomemory.runtime.service import RunningService
from audiomemory.separator.audio import to_output_format
from audiomemory.separator.backends import StemBlock
from audiomemory.separator.backends.demucs import DemucsBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.v1 import separator_pb2_grpc, tensor_pb2

from .streams import collect, output, requests, tone

STEMS = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def backend(tiny_separator: dict[str, Any]) -> DemucsBackend:
    loaded = DemucsBackend(SeparatorConfig(**tiny_separator))
    loaded.load()
    return loaded


@pytest.mark.parametrize(
    ("rate", "channels", "dtype", "atol"),
    [(44100, 2, tensor_pb2.DTYPE_FLOAT32, 1e-6), (48000, 1, tensor_pb2.DTYPE_FLOAT16, 2e-3)],
)
def test_streamed_blocks_concatenate_to_the_whole_song_separation_in_the_asked_format(
    stub: separator_pb2_grpc.SeparatorStub, backend: DemucsBackend,
    rate: int, channels: int, dtype: tensor_pb2.DType.ValueType, atol: float,
) -> None:
    audio = tone(44100, 2, 5.1, seed=7)  # several 1.5 s strides of the tiny model
    got = collect(stub.Separate(requests(audio, 44100, output=output(rate, channels, dtype))))
    assert len(got.rounds) >= 4, "stems come block by block, not one after another"
    whole = backend.separate(audio, 44100).audio
    frames = got.header.frames
    for index, name in enumerate(STEMS):
        expected = to_output_format(whole[index], 44100, rate, channels, frames, float16=channels == 1)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got.stems[name], expected, rtol=0, atol=atol * scale)


def test_asked_stems_come_alone_and_in_the_asked_order(stub: separator_pb2_grpc.SeparatorStub) -> None:
    audio = tone(44100, 2, 1.0, seed=8)
    every = collect(stub.Separate(requests(audio, 44100)))
    two = collect(stub.Separate(requests(audio, 44100, output=output(stems=["vocals", "drums"]))))
    assert list(two.header.stems) == ["vocals", "drums"] and list(two.stems) == ["vocals", "drums"]
    for name in ("vocals", "drums"):
        np.testing.assert_array_equal(two.stems[name], every.stems[name])


class HeldDemucs(DemucsBackend):
    """The real backend, whose first block waits until the test releases it (so its slot stays busy)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def separate_blocks(self, *args: Any, **kwargs: Any) -> Iterator[StemBlock]:
        if not self.release.wait(30):
            raise TimeoutError("test never released the separation")
        yield from super().separate_blocks(*args, **kwargs)


def test_caller_behind_a_busy_slot_hears_its_place_in_line_before_its_header(
    start_separator: Callable[..., RunningService], tiny_separator: dict[str, Any]
) -> None:
    config = SeparatorConfig(port=0, concurrency=1, **tiny_separator)
    backend = HeldDemucs(config)
    svc = start_separator(config, backend)
    with grpc.insecure_channel(svc.address) as channel:
        stub = separator_pb2_grpc.SeparatorStub(channel)
        first = stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60)
        served(first)
        assert next(first).WhichOneof("item") == "header"  # first holds the slot, held in separate_blocks
        second = stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60)
        served(second)
        waiting = next(second)
        assert waiting.WhichOneof("item") == "queued"
        assert (waiting.queued.position, waiting.queued.running) == (1, 1)
        backend.release.set()
        assert sum(1 for _ in first) > 0
        got = collect(second, opened=True)
        assert got.header.frames == 13230 and len(got.stems) == 4


def test_twenty_minute_song_is_accepted_and_its_first_block_streams(stub: separator_pb2_grpc.SeparatorStub) -> None:
    # 20 min at 1 kHz mono float16 (2.4 MB upload); the server holds it at 44.1 kHz stereo (423 MB).
    rate = 1000
    song = (1e-3 * np.sin(np.arange(1200 * rate) * 0.3)).astype(np.float32)[None]
    call = stub.Separate(requests(song, rate, output=output(rate, 1, tensor_pb2.DTYPE_FLOAT16), dtype="float16"),
                         timeout=120)
    served(call)
    header = next(call).header
    assert (header.frames, list(header.stems)) == (1200 * rate, STEMS)
    block = [next(call).chunk for _ in STEMS]
    assert [c.stem for c in block] == [0, 1, 2, 3] and block[0].audio.samples.shape[1] > 0
    call.cancel()


def test_song_over_max_seconds_is_refused_naming_the_limit(stub: separator_pb2_grpc.SeparatorStub) -> None:
    rate = 1000
    song = np.zeros((1, 1200 * rate + 1), np.float32)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Separate(requests(song, rate, dtype="float16"), timeout=60))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "audio: more than the limit of 1200000 frames (1200 s at 1000 Hz)" in caught.value.details()


def test_a_full_queue_holds_threads_but_health_and_describe_still_answer(
    start_separator: Callable[..., RunningService], tiny_separator: dict[str, Any]
) -> None:
    # Every running or queued call keeps a handler thread: the pool has room for all of them and more.
    from helpers import health

    from audiomemory.v1 import common_pb2

    config = SeparatorConfig(port=0, concurrency=1, max_queue=3, max_workers=1, **tiny_separator)
    backend = HeldDemucs(config)
    svc = start_separator(config, backend)
    with grpc.insecure_channel(svc.address) as channel:
        stub = separator_pb2_grpc.SeparatorStub(channel)
        calls = [stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60)]
        served(calls[0])
        assert next(calls[0]).WhichOneof("item") == "header"  # holds the slot, held in separate_blocks
        calls += [stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60) for _ in range(3)]
        assert len({served(c).identity for c in calls[1:]}) == 1  # each opens with its header, then waits
        assert [next(c).WhichOneof("item") for c in calls[1:]] == ["queued"] * 3
        assert health(channel, "") == 1
        assert stub.Describe(common_pb2.DescribeRequest(), timeout=5).stems
        backend.release.set()
        assert all(sum(1 for _ in c) > 0 for c in calls)
