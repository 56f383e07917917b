"""Every bad Embed call gets the right status and a message naming the field, and the server keeps serving."""

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

Request = audio_encoder_pb2.EmbedRequest


def chunk(
    samples: np.ndarray, rate: int = 48000, channels: int | None = None, signal: int = 0
) -> audio_encoder_pb2.EmbedRequest:
    return Request(
        signal=signal,
        audio=tensor_pb2.AudioChunk(
            sample_rate=rate, channels=samples.shape[0] if channels is None else channels, samples=to_tensor(samples)
        ),
    )


def options(signals: int = 0, input_frames: int = 0) -> audio_encoder_pb2.EmbedRequest:
    return Request(options=audio_encoder_pb2.EmbedOptions(signals=signals, input_frames=input_frames))


GOOD = tone(48000, 1, 0.2)
NAN = GOOD.copy()
NAN[0, 5] = np.nan
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

BAD: dict[str, tuple[list[audio_encoder_pb2.EmbedRequest], grpc.StatusCode, str]] = {
    "no messages": ([], INVALID, "requests: signal 0 got no audio frames in 0 request(s)"),
    "request without audio": ([Request()], INVALID, "requests[0].audio: missing"),
    "options twice": ([options(2), options(2)], INVALID, "requests[1].options: expected in the first request only"),
    "options after audio": ([chunk(GOOD), options(1)], INVALID, "requests[1].options: expected in the first"),
    "signal out of range": ([options(4), chunk(GOOD), chunk(GOOD, signal=7)], INVALID,
                            "requests[2].signal: expected 0..3, got 7"),
    "signal without options": ([chunk(GOOD, signal=1)], INVALID, "requests[0].signal: expected 0..0, got 1"),
    "a signal with no audio": ([options(3), chunk(GOOD), chunk(GOOD, signal=2)], INVALID,
                               "requests: signal 1 got no audio frames in 3 request(s); expected audio for every "
                               "signal 0..2"),
    "zero frames": ([chunk(np.zeros((1, 0), np.float32))], INVALID, "signal 0 got no audio frames"),
    "negative signals": ([options(-1)], INVALID, "requests[0].options.signals: expected 0..8 (0 = 1), got -1"),
    "too many signals": ([options(9)], EXHAUSTED, "requests[0].options.signals: 9 is over the limit of max_signals=8"),
    "input_frames over the cap": ([options(1, 1200 * 48000 + 1)], EXHAUSTED,
                                  "requests[0].options.input_frames: 57600001 is over the limit of 57600000 frames"),
    "nan": ([chunk(NAN)], INVALID, "requests[0].audio.samples: values must be finite"),
    "three channels": ([chunk(np.zeros((3, 100), np.float32))], INVALID,
                       "requests[0].audio.channels: expected 1 or 2, got 3"),
    "zero rate": ([chunk(GOOD, rate=0)], INVALID, "requests[0].audio.sample_rate: expected 1..384000 Hz, got 0"),
    "absurd rate": ([chunk(GOOD, rate=5_000_000)], INVALID, "got 5000000"),
    "rate changes mid-signal": ([chunk(GOOD), chunk(GOOD, rate=44100)], INVALID,
                                "requests[1].audio: format of signal 0 changed mid-signal from 48000 Hz x1 to "
                                "44100 Hz x1"),
    "channels change mid-signal": ([options(2), chunk(GOOD, signal=1), chunk(np.zeros((2, 9), np.float32), signal=1)],
                                   INVALID, "requests[2].audio: format of signal 1 changed mid-signal"),
    "int32 samples": ([chunk(np.zeros((1, 10), np.int32))], INVALID, "samples.dtype: expected float16 or float32"),
    "channels disagree with samples": ([chunk(GOOD, channels=2)], INVALID, "samples.shape[0]: expected 2, got 1"),
}


def answer(stub: audio_encoder_pb2_grpc.AudioEncoderStub, messages: list[Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Embed(iter(messages), timeout=30))
    return caught.value


@pytest.mark.parametrize("case", list(BAD))
def test_bad_call_has_its_status_and_a_message_naming_the_field(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, case: str
) -> None:
    messages, code, needle = BAD[case]
    error = answer(stub, messages)
    assert error.code() == code, error.details()
    assert needle in (error.details() or "")


def test_different_signals_may_have_different_formats(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    result = collect(stub.Embed(iter([options(2), chunk(GOOD), chunk(tone(22050, 2, 0.2), 22050, signal=1)])))
    assert result.end is not None and list(result.end.frames) == [1, 1]


def test_server_keeps_serving_after_bad_requests(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    for messages, _, _ in BAD.values():
        answer(stub, messages)
    result = collect(stub.Embed(requests(GOOD, 48000)))
    assert result.end is not None and list(result.end.frames) == [1]


@pytest.fixture
def capped(
    start_encoder: Callable[..., RunningService], tiny_encoder: dict[str, Any]
) -> Iterator[audio_encoder_pb2_grpc.AudioEncoderStub]:
    config = AudioEncoderConfig(port=0, hop_seconds=1.0, max_seconds=1.0, **tiny_encoder)
    svc = start_encoder(config)
    with grpc.insecure_channel(svc.address) as channel:
        yield audio_encoder_pb2_grpc.AudioEncoderStub(channel)


def test_a_signal_over_max_seconds_is_resource_exhausted_naming_signal_and_limit(
    capped: audio_encoder_pb2_grpc.AudioEncoderStub,
) -> None:
    # Signal 0 is short and fine; signal 1 passes 1 s at 22.05 kHz in its third piece.
    messages = [options(2), chunk(GOOD), *list(requests(tone(22050, 1, 1.2), 22050, chunk_bytes=40_000, signal=1))]
    error = answer(capped, messages)
    assert error.code() == EXHAUSTED
    assert "requests[4].audio: signal 1 is longer than the limit of 22050 frames (1 s at 22050 Hz)" in (
        error.details() or ""
    )
    assert collect(capped.Embed(requests(tone(48000, 1, 0.9), 48000))).end is not None
