"""Every bad Embed request gets the right status and message, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, tensor_pb2

from .streams import collect, requests, tone


def chunk(samples: np.ndarray, rate: int = 48000, channels: int | None = None) -> audio_encoder_pb2.EmbedRequest:
    return audio_encoder_pb2.EmbedRequest(
        audio=tensor_pb2.AudioChunk(
            sample_rate=rate, channels=samples.shape[0] if channels is None else channels, samples=to_tensor(samples)
        )
    )


GOOD = tone(48000, 1, 0.2)
NAN = GOOD.copy()
NAN[0, 5] = np.nan

BAD: dict[str, tuple[list[audio_encoder_pb2.EmbedRequest], str]] = {
    "no messages": ([], "audio: empty, the stream held no audio chunks"),
    "request without audio": ([audio_encoder_pb2.EmbedRequest()], "requests[0].audio: missing"),
    "zero frames": ([chunk(np.zeros((1, 0), np.float32))], "empty audio"),
    "nan": ([chunk(NAN)], "values must be finite"),
    "three channels": ([chunk(np.zeros((3, 100), np.float32))], "channels: expected 1 or 2, got 3"),
    "zero rate": ([chunk(GOOD, rate=0)], "sample_rate: expected 1..384000 Hz, got 0"),
    "absurd rate": ([chunk(GOOD, rate=5_000_000)], "got 5000000"),
    "rate changes mid-stream": ([chunk(GOOD), chunk(GOOD, rate=44100)], "format changed mid-stream"),
    "int32 samples": ([chunk(np.zeros((1, 10), np.int32))], "samples.dtype: expected float16 or float32"),
    "channels disagree with samples": ([chunk(GOOD, channels=2)], "samples.shape[0]: expected 2, got 1"),
}


def answer(stub: audio_encoder_pb2_grpc.AudioEncoderStub, messages: list[Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Embed(iter(messages), timeout=30))
    return caught.value


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_invalid_argument_naming_the_problem(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, case: str
) -> None:
    messages, needle = BAD[case]
    error = answer(stub, messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert needle in error.details()


def test_server_keeps_serving_after_bad_requests(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    for messages, _ in BAD.values():
        answer(stub, messages)
    header, _, embeddings = collect(stub.Embed(requests(GOOD, 48000)))
    assert header.frames == 1 and embeddings.shape == (1, 512)


@pytest.fixture
def capped(
    start_encoder: Callable[..., RunningService], tiny_encoder: dict[str, Any]
) -> Iterator[audio_encoder_pb2_grpc.AudioEncoderStub]:
    config = AudioEncoderConfig(port=0, hop_seconds=1.0, max_seconds=1.0, max_input_bytes=300_000, **tiny_encoder)
    svc = start_encoder(config)
    with grpc.insecure_channel(svc.address) as channel:
        yield audio_encoder_pb2_grpc.AudioEncoderStub(channel)


def test_over_the_duration_cap_is_resource_exhausted_naming_the_limit(
    capped: audio_encoder_pb2_grpc.AudioEncoderStub,
) -> None:
    error = answer(capped, list(requests(tone(22050, 1, 1.2), 22050, chunk_bytes=20_000)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "22050 frames" in error.details()


def test_over_the_byte_cap_is_resource_exhausted_naming_the_limit(
    capped: audio_encoder_pb2_grpc.AudioEncoderStub,
) -> None:
    error = answer(capped, list(requests(tone(96000, 1, 0.9), 96000, chunk_bytes=50_000)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "300000 bytes" in error.details()
    header, _, _ = collect(capped.Embed(requests(tone(48000, 1, 0.3), 48000)))
    assert header.frames == 1
