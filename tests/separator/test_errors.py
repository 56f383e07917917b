"""Every bad Separate request gets the right status and a message naming the field and limit,
and the server keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService
from audiomemory.separator.config import SeparatorConfig
from audiomemory.v1 import separator_pb2, separator_pb2_grpc, tensor_pb2

from .streams import collect, output, requests, tone

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def chunk(samples: np.ndarray, rate: int = 44100, channels: int | None = None) -> separator_pb2.SeparateRequest:
    return separator_pb2.SeparateRequest(
        audio=tensor_pb2.AudioChunk(
            sample_rate=rate, channels=samples.shape[0] if channels is None else channels, samples=to_tensor(samples)
        )
    )


GOOD = tone(44100, 2, 0.2)
NAN = GOOD.copy()
NAN[1, 100] = np.nan
INF = GOOD.copy()
INF[0, 7] = np.inf

BAD: dict[str, tuple[list[separator_pb2.SeparateRequest], str]] = {
    "no messages": ([], "audio: empty"),
    "options only": ([separator_pb2.SeparateRequest(options=output())], "audio: empty"),
    "zero frames": ([chunk(np.zeros((2, 0), np.float32))], "empty audio"),
    "empty request": ([separator_pb2.SeparateRequest()], "empty request"),
    "nan": ([chunk(NAN)], "finite"),
    "inf": ([chunk(INF)], "finite"),
    "three channels": ([chunk(np.zeros((3, 100), np.float32))], "channels: expected 1 or 2, got 3"),
    "zero rate": ([chunk(GOOD, rate=0)], "sample_rate: expected 1..384000 Hz, got 0"),
    "absurd rate": ([chunk(GOOD, rate=10_000_000)], "got 10000000"),
    "negative rate": ([chunk(GOOD, rate=-44100)], "got -44100"),
    "channels disagree with samples": ([chunk(GOOD, channels=1)], "samples.shape[0]: expected 1, got 2"),
    "rate changes mid-stream": ([chunk(GOOD), chunk(GOOD, rate=48000)], "format changed mid-stream"),
    "channels change mid-stream": ([chunk(GOOD), chunk(GOOD[:1])], "format changed mid-stream"),
    "int32 samples": ([chunk(np.zeros((2, 10), np.int32))], "samples.dtype: expected float16 or float32"),
    "options after audio": ([chunk(GOOD), separator_pb2.SeparateRequest(options=output())], "before any audio"),
    "options twice": (
        [separator_pb2.SeparateRequest(options=output()), separator_pb2.SeparateRequest(options=output())],
        "at most once",
    ),
    "output channels 3": ([separator_pb2.SeparateRequest(options=output(channels=3)), chunk(GOOD)], "channels"),
    "output rate absurd": (
        [separator_pb2.SeparateRequest(options=output(rate=1_000_000)), chunk(GOOD)],
        "options.output.sample_rate",
    ),
    "output dtype int32": (
        [separator_pb2.SeparateRequest(options=output(dtype=tensor_pb2.DTYPE_INT32)), chunk(GOOD)],
        "options.output.dtype: expected FLOAT32 or FLOAT16",
    ),
}


def answer(stub: separator_pb2_grpc.SeparatorStub, messages: list[Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Separate(iter(messages), timeout=30))
    return caught.value


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_invalid_argument_naming_the_problem(stub: separator_pb2_grpc.SeparatorStub, case: str) -> None:
    messages, needle = BAD[case]
    error = answer(stub, messages)
    assert error.code() == INVALID, error.details()
    assert needle in error.details()
    assert len(error.details()) < 400  # names the problem, never echoes the payload


def test_server_keeps_serving_after_bad_requests(stub: separator_pb2_grpc.SeparatorStub) -> None:
    for messages, _ in BAD.values():
        answer(stub, messages)
    got = collect(stub.Separate(requests(GOOD, 44100)))
    assert got.header.frames == GOOD.shape[1] and len(got.stems) == 4


@pytest.fixture
def capped(
    start_separator: Callable[..., RunningService], tiny_separator: dict[str, Any]
) -> Iterator[separator_pb2_grpc.SeparatorStub]:
    svc = start_separator(SeparatorConfig(port=0, max_seconds=1.0, **tiny_separator))
    with grpc.insecure_channel(svc.address) as channel:
        yield separator_pb2_grpc.SeparatorStub(channel)


def test_audio_over_max_seconds_is_resource_exhausted_naming_the_limit_and_server_keeps_serving(
    capped: separator_pb2_grpc.SeparatorStub,
) -> None:
    # 1.5 s at 16 kHz mono: over the 1 s cap (16000 frames at that rate).
    error = answer(capped, list(requests(tone(16000, 1, 1.5), 16000, chunk_bytes=16_000)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "audio: more than the limit of 16000 frames (1 s at 16000 Hz)" in error.details()
    ok = collect(capped.Separate(requests(tone(44100, 1, 0.5), 44100)))
    assert ok.header.frames == 22050


def test_unknown_stem_name_is_invalid_argument_naming_the_known_stems_and_what_came(
    stub: separator_pb2_grpc.SeparatorStub,
) -> None:
    error = answer(stub, list(requests(GOOD, 44100, output=output(stems=["vocals", "piano"]))))
    assert error.code() == INVALID
    assert "options.stems: expected distinct names among drums, bass, other, vocals, got vocals, piano" in (
        error.details()
    )
