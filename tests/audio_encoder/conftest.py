"""Fixtures for the audio encoder tests: tiny OpenL3 weights on disk and a running encoder.

OpenL3's CNN costs ~0.4 s per frame on two CPU cores even with random weights (same
architecture), so the shared service uses a 0.5 s hop and the tests send clips of about a second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.service import DEFINITION
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.v1 import audio_encoder_pb2_grpc

HOP = 0.5


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
def start_encoder(start_services: Callable[..., RunningService]) -> Callable[..., RunningService]:
    """``start(config, backend=None, wait=True)``: extra encoders, stopped after the test."""
    return functools.partial(start_services, DEFINITION)
