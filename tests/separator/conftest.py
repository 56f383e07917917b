"""Fixtures for the separator tests: the tiny Demucs repo, a running separator, and stream helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from audiomemory.runtime.backend import Backend
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.separator.backends.demucs import DemucsBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.service import DEFINITION
from audiomemory.v1 import separator_pb2_grpc


@pytest.fixture(scope="session")
def tiny_separator(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Config overrides selecting the tiny random-weight HTDemucs (written once per session)."""
    return DemucsBackend.write_tiny(tmp_path_factory.mktemp("models"))


def start(overrides: dict[str, Any], **config: Any) -> RunningService:
    return start_service(DEFINITION, SeparatorConfig(port=0, **overrides, **config), wait=True, wait_timeout=60)


@pytest.fixture(scope="module")
def separator(tiny_separator: dict[str, Any]) -> Iterator[RunningService]:
    """One tiny separator on an ephemeral port, shared by a test module."""
    svc = start(tiny_separator)
    yield svc
    svc.stop(0)


@pytest.fixture
def start_separator() -> Iterator[Callable[..., RunningService]]:
    """Start extra separators (own config or backend); all are stopped after the test."""
    started: list[RunningService] = []

    def _start(config: SeparatorConfig, backend: Backend | None = None, *, wait: bool = True) -> RunningService:
        svc = start_service(DEFINITION, config, backend, wait=wait, wait_timeout=60)
        started.append(svc)
        return svc

    yield _start
    for svc in started:
        svc.stop(0)


@pytest.fixture(scope="module")
def stub(separator: RunningService) -> Iterator[separator_pb2_grpc.SeparatorStub]:
    with grpc.insecure_channel(separator.address) as channel:
        yield separator_pb2_grpc.SeparatorStub(channel)
