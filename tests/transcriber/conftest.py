"""Fixtures for the transcriber: the tiny Whisper profile on disk, backends in-process, a real server on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.transcriber.backends.whisper import WhisperBackend
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.service import DEFINITION
from audiomemory.v1 import tensor_pb2, transcriber_pb2, transcriber_pb2_grpc

#: The guards off: random weights then always leave text, so that a backend or service losing it fails.
UNGUARDED: dict[str, Any] = {"silence_dbfs": None, "no_speech_threshold": None, "compression_ratio_threshold": None}


@pytest.fixture(scope="session")
def tiny_whisper(tiny: Any) -> dict[str, Any]:
    return dict(tiny("transcriber"))


@pytest.fixture(scope="session")
def whisper(tiny_whisper: dict[str, Any]) -> WhisperBackend:
    """The tiny Whisper with the guards off, loaded in this process."""
    backend = WhisperBackend(TranscriberConfig(**tiny_whisper, **UNGUARDED, device="cpu"))
    backend.load()
    return backend


def start_transcriber(tiny_whisper: dict[str, Any], **settings: Any) -> RunningService:
    config = TranscriberConfig(port=0, device="cpu", torch_threads=1, **{**tiny_whisper, **settings})
    return start_service(DEFINITION, config, wait=True, wait_timeout=120)


@pytest.fixture(scope="module")
def unguarded_service(tiny_whisper: dict[str, Any]) -> Iterator[RunningService]:
    service = start_transcriber(tiny_whisper, **UNGUARDED, max_seconds=120.0)
    yield service
    service.stop(grace=1)


@pytest.fixture(scope="module")
def guarded_service(tiny_whisper: dict[str, Any]) -> Iterator[RunningService]:
    """The service as deployed (default guards), with a small length limit for the limit tests."""
    service = start_transcriber(tiny_whisper, max_seconds=60.0)
    yield service
    service.stop(grace=1)


def noise(rate: int, seconds: float, level: float = 0.1, seed: int = 0, channels: int = 1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((channels, int(rate * seconds)))).astype(np.float32)


def requests(audio: np.ndarray, rate: int, *, piece: int = 48_000, input_frames: int = 0,
             dtype: str = "float32") -> Iterator[transcriber_pb2.TranscribeRequest]:
    yield transcriber_pb2.TranscribeRequest(options=transcriber_pb2.TranscribeOptions(input_frames=input_frames))
    for start in range(0, audio.shape[1], piece):
        part = audio[:, start : start + piece]
        yield transcriber_pb2.TranscribeRequest(audio=tensor_pb2.AudioChunk(
            sample_rate=rate, channels=audio.shape[0], samples=to_tensor(part, dtype=dtype)))


def transcribe(service: RunningService, reqs: Iterator[transcriber_pb2.TranscribeRequest]
               ) -> list[transcriber_pb2.TranscribeResponse]:
    with grpc.insecure_channel(service.address) as channel:
        return list(transcriber_pb2_grpc.TranscriberStub(channel).Transcribe(reqs, timeout=120))
