"""Fixtures for the separator tests: the tiny Demucs repo, a running separator, and stream helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from audiomemory.runtime.service import RunningService, start_service
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.service import DEFINITION
from audiomemory.v1 import separator_pb2_grpc


def start(overrides: dict[str, Any], **config: Any) -> RunningService:
    return start_service(DEFINITION, SeparatorConfig(port=0, **overrides, **config), wait=True, wait_timeout=60)


@pytest.fixture(scope="module")
def separator(request: pytest.FixtureRequest, tiny_separator: dict[str, Any], compiled_cache: Path
              ) -> Iterator[RunningService]:
    """One tiny separator on an ephemeral port, shared by a test module, with the backend the module names
    (``SEPARATOR_BACKEND``; default demucs): the *_openvino.py modules run the same tests on openvino."""
    backend = getattr(request.module, "SEPARATOR_BACKEND", "demucs")
    svc = start({**tiny_separator, "backend": backend}, compiled_cache=str(compiled_cache))
    yield svc
    svc.stop(0)


@pytest.fixture
def start_separator(start_services: Callable[..., RunningService]) -> Callable[..., RunningService]:
    """``start(config, backend=None, wait=True)``: extra separators, stopped after the test."""
    return functools.partial(start_services, DEFINITION)


@pytest.fixture(scope="module")
def stub(separator: RunningService) -> Iterator[separator_pb2_grpc.SeparatorStub]:
    with grpc.insecure_channel(separator.address) as channel:
        yield separator_pb2_grpc.SeparatorStub(channel)
