"""Every bad Transcribe call gets the right status and a message naming the field; the server keeps serving."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import tensor_pb2, transcriber_pb2

from .conftest import noise, requests, transcribe

Request = transcriber_pb2.TranscribeRequest
GOOD = noise(48000, 0.2)
NAN = GOOD.copy()
NAN[0, 3] = np.nan
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def chunk(samples: np.ndarray, rate: int = 48000, channels: int | None = None) -> Request:
    return Request(audio=tensor_pb2.AudioChunk(
        sample_rate=rate, channels=samples.shape[0] if channels is None else channels, samples=to_tensor(samples)))


def options(input_frames: int = 0, language: str = "") -> Request:
    return Request(options=transcriber_pb2.TranscribeOptions(input_frames=input_frames, language=language))


BAD: dict[str, tuple[list[Request], grpc.StatusCode, str]] = {
    "no messages": ([], INVALID, "requests: no audio frames in 0 request(s)"),
    "options only": ([options()], INVALID, "requests: no audio frames in 1 request(s)"),
    "request without audio": ([chunk(GOOD), Request()], INVALID, "requests[1].audio: missing"),
    "options twice": ([options(), options()], INVALID, "requests[1].options: expected in the first request only"),
    "negative input_frames": ([options(-5)], INVALID, "requests[0].options.input_frames: expected 0 (unknown) or "
                              "more, got -5"),
    "unknown language": ([options(language="xx"), chunk(noise(16000, 1.0), 16000)], INVALID,
                         "options.language: 'xx' is not one of the model's languages"),
    "nan": ([chunk(NAN)], INVALID, "requests.audio[0].samples: values must be finite"),
    "three channels": ([chunk(np.zeros((3, 100), np.float32))], INVALID, "requests.audio[0].channels: expected 1 "
                       "or 2, got 3"),
    "rate zero": ([chunk(GOOD, rate=0)], INVALID, "requests.audio[0].sample_rate: expected 1..384000 Hz, got 0"),
    "format change": ([chunk(GOOD), chunk(GOOD, rate=44100)], INVALID,
                      "requests.audio[1]: format changed mid-stream from 48000 Hz x1 to 44100 Hz x1"),
    "over the length limit": ([chunk(np.zeros((1, 16000 * 61), np.float32), rate=16000)],
                              grpc.StatusCode.RESOURCE_EXHAUSTED, "requests.audio: more than the limit of "
                              "960000 frames (60 s at 16000 Hz)"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gets_a_status_naming_the_field_and_the_service_keeps_serving(
    guarded_service: RunningService, name: str
) -> None:
    reqs, code, words = BAD[name]
    with pytest.raises(grpc.RpcError) as info:
        transcribe(guarded_service, iter(reqs))
    assert info.value.code() is code
    assert words in (info.value.details() or "")
    assert transcribe(guarded_service, requests(np.zeros((1, 1600), np.float32), 16000))[-1].HasField("transcript")
