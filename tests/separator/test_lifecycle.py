"""Loading: health says NOT_SERVING until the model is in, and a missing model fails fast and clearly."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from helpers import GatedLoad, health

from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.service import RunningService
from audiomemory.separator.backends.demucs import DemucsBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.v1 import common_pb2, separator_pb2_grpc

from .streams import collect, requests, tone

SERVICE = "audiomemory.v1.Separator"


class GatedDemucs(GatedLoad, DemucsBackend):
    """The real backend, whose load waits until the test releases it."""


def test_health_is_not_serving_until_the_model_has_loaded(
    start_separator: Callable[..., RunningService], tiny_separator: dict[str, Any]
) -> None:
    config = SeparatorConfig(port=0, **tiny_separator)
    backend = GatedDemucs(config)
    svc = start_separator(config, backend, wait=False)
    with grpc.insecure_channel(svc.address) as channel:
        stub = separator_pb2_grpc.SeparatorStub(channel)
        for name in ("", SERVICE):
            assert health(channel, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        for call in (
            lambda: stub.Describe(common_pb2.DescribeRequest(), timeout=5),
            lambda: list(stub.Separate(requests(tone(44100, 2, 0.2), 44100), timeout=5)),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in caught.value.details()

        backend.release.set()
        svc.wait_ready(30)
        for name in ("", SERVICE):
            assert health(channel, name) == health_pb2.HealthCheckResponse.SERVING
        info = stub.Describe(common_pb2.DescribeRequest(), timeout=5)
        assert list(info.stems) == ["drums", "bass", "other", "vocals"]
        assert collect(stub.Separate(requests(tone(44100, 2, 0.2), 44100))).header.frames == 8820


def test_missing_model_offline_fails_within_five_seconds_naming_model_and_fix(
    empty_caches: Path, start_separator: Callable[..., RunningService]
) -> None:
    started = time.perf_counter()
    svc = start_separator(SeparatorConfig(port=0, model="htdemucs"), wait=False)
    with pytest.raises(FailedPrecondition) as caught:
        svc.wait_ready(10)
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "'htdemucs'" in message and "audiomemory models pull" in message and "--models tiny" in message
    with grpc.insecure_channel(svc.address) as channel:
        for name in ("", SERVICE):
            assert health(channel, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as rpc:
            separator_pb2_grpc.SeparatorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=5)
        assert rpc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "htdemucs" in rpc.value.details() and "models pull" in rpc.value.details()


def test_name_missing_from_a_local_repo_lists_what_the_repo_holds(
    empty_caches: Path, tiny_separator: dict[str, Any]
) -> None:
    backend = DemucsBackend(SeparatorConfig(model="htdemucs_ft", repo=tiny_separator["repo"]))
    with pytest.raises(FailedPrecondition, match=r"'htdemucs_ft' is not in repo .* \(it holds: tiny, tinysig\)"):
        backend.load()


def test_repo_that_is_not_a_directory_is_model_unavailable_not_sys_exit(empty_caches: Path) -> None:
    not_a_dir = empty_caches / "file"
    not_a_dir.write_text("x")
    # demucs' get_model would call sys.exit here; the backend answers with the project's error.
    with pytest.raises(FailedPrecondition, match="is not a directory"):
        DemucsBackend(SeparatorConfig(model="tiny", repo=not_a_dir)).load()
