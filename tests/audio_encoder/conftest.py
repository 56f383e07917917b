"""Fixtures for the audio encoder tests: tiny OpenL3 weights on disk and a running encoder.

OpenL3's CNN costs ~0.4 s per frame on two CPU cores even with random weights (same
architecture), so the shared service uses a 0.5 s hop and the tests send clips of about a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.service import DEFINITION
from audiomemory.runtime.backend import Backend
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.v1 import audio_encoder_pb2_grpc

HOP = 0.5


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Config overrides selecting random OpenL3 weights in the hub-cache layout (written once)."""
    return OpenL3Backend.write_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def encoder(tiny_encoder: dict[str, Any]) -> Iterator[RunningService]:
    svc = start_service(DEFINITION, AudioEncoderConfig(port=0, hop_seconds=HOP, **tiny_encoder), wait=True)
    yield svc
    svc.stop(0)


@pytest.fixture(scope="module")
def stub(encoder: RunningService) -> Iterator[audio_encoder_pb2_grpc.AudioEncoderStub]:
    with grpc.insecure_channel(encoder.address) as channel:
        yield audio_encoder_pb2_grpc.AudioEncoderStub(channel)


@pytest.fixture
def start_encoder() -> Iterator[Callable[..., RunningService]]:
    """Start extra encoders (own config or backend); all are stopped after the test."""
    started: list[RunningService] = []

    def _start(config: AudioEncoderConfig, backend: Backend | None = None, *, wait: bool = True) -> RunningService:
        svc = start_service(DEFINITION, config, backend, wait=wait, wait_timeout=60)
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        svc.stop(0)
