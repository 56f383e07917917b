"""Fixtures for the generator: the tiny SD and CLIP services on port 0, and stubs to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.service import DEFINITION as GENERATOR
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.text_encoder.service import DEFINITION as TEXT_ENCODER
from audiomemory.v1 import generator_pb2_grpc, text_encoder_pb2_grpc


@pytest.fixture(scope="module")
def generator_service(request: pytest.FixtureRequest, tiny_sd: dict[str, Any], compiled_cache: Path
                      ) -> Iterator[RunningService]:
    """The generator on the tiny profile, with the backend the test module names (``GENERATOR_BACKEND``; default
    stable-diffusion): test_generator_service_openvino.py runs test_generator_service.py's tests on openvino."""
    backend = getattr(request.module, "GENERATOR_BACKEND", "stable-diffusion")
    sizes = getattr(request.module, "COMPILED_SIZES", "")  # openvino: the sizes it paints besides the default
    # float32 pinned: these tests compare served images with diffusers' own float32 pipeline to 1/255,
    # and "auto" would pick bfloat16 on a CPU with avx512_bf16 (test_generator_precision covers that).
    config = GeneratorConfig(port=0, device="cpu", torch_threads=2, precision="float32",
                             compiled_cache=str(compiled_cache), compiled_sizes=sizes,
                             **{**tiny_sd, "backend": backend})
    service = start_service(GENERATOR, config, wait=True, wait_timeout=120)
    yield service
    service.stop(grace=2)


@pytest.fixture(scope="module")
def text_encoder_service(tiny_clip: dict[str, Any]) -> Iterator[RunningService]:
    config = TextEncoderConfig(port=0, device="cpu", torch_threads=2, **tiny_clip)
    service = start_service(TEXT_ENCODER, config, wait=True, wait_timeout=120)
    yield service
    service.stop(grace=2)


@pytest.fixture
def generator(generator_service: RunningService) -> Iterator[generator_pb2_grpc.GeneratorStub]:
    with grpc.insecure_channel(generator_service.address) as channel:
        yield generator_pb2_grpc.GeneratorStub(channel)


@pytest.fixture
def text_encoder(text_encoder_service: RunningService) -> Iterator[text_encoder_pb2_grpc.TextEncoderStub]:
    with grpc.insecure_channel(text_encoder_service.address) as channel:
        yield text_encoder_pb2_grpc.TextEncoderStub(channel)
