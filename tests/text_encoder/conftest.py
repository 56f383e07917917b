"""Fixtures for the text encoder: the tiny CLIP profile on disk and a real server on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from audiomemory.runtime.service import RunningService, start_service
from audiomemory.text_encoder.backends.clip import ClipBackend
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.text_encoder.service import DEFINITION
from audiomemory.v1 import text_encoder_pb2_grpc


@pytest.fixture(scope="session")
def clip_backend(tiny_clip: dict[str, Any]) -> ClipBackend:
    backend = ClipBackend(TextEncoderConfig(**tiny_clip, device="cpu"))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def text_encoder_service(tiny_clip: dict[str, Any]) -> Iterator[RunningService]:
    # Small limits so the limit tests need no megabyte payloads.
    config = TextEncoderConfig(port=0, device="cpu", torch_threads=1, max_texts=4, max_chars=500, **tiny_clip)
    service = start_service(DEFINITION, config, wait=True, wait_timeout=120)
    yield service
    service.stop(grace=1)


@pytest.fixture
def text_encoder(text_encoder_service: RunningService) -> Iterator[text_encoder_pb2_grpc.TextEncoderStub]:
    with grpc.insecure_channel(text_encoder_service.address) as channel:
        yield text_encoder_pb2_grpc.TextEncoderStub(channel)
