"""Suite-wide settings: never touch the network, tiny models written once per session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


from audiomemory.profiles import write_tiny_for  # after the offline switches above
from audiomemory.runtime.backend import Backend
from audiomemory.runtime.config import ServiceConfig
from audiomemory.runtime.service import RunningService, ServiceDefinition, start_service

TinyOverrides = Callable[[str], dict[str, Any]]
StartService = Callable[..., RunningService]

# `make test` runs the suite on two xdist workers (`-n 2 --dist loadscope`): each module's tests go to one worker
# as one unit, so its module fixtures (a started orchestrator, a web server, replicas) are set up once. (With
# pytest 9, `--dist loadgroup` no longer groups anything: every test went alone to either worker, and a
# module's fixtures were set up on both.) The modules marked slow are handed out first, so that the last
# units to finish are short ones.

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    # Two workers on two cores: one torch thread each (in this process only; subprocesses keep their own
    # settings). Two threads each would oversubscribe the cores, and OpenMP's spinning threads thrash.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules with a slow test first (in their order), then the rest: a stable reordering of modules only."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyOverrides:
    """``tiny(kind)`` → config overrides selecting that service's tiny random-weight model (written once)."""
    root = tmp_path_factory.mktemp("tiny-models")
    written: dict[str, dict[str, Any]] = {}

    def get(kind: str) -> dict[str, Any]:
        if kind not in written:
            written[kind] = write_tiny_for(kind, Path(root) / kind)
        return dict(written[kind])

    return get


# Each area's name for its model's tiny overrides; one copy on disk for the whole session.
@pytest.fixture(scope="session")
def tiny_separator(tiny: TinyOverrides) -> dict[str, Any]:
    return tiny("separator")


@pytest.fixture(scope="session")
def tiny_encoder(tiny: TinyOverrides) -> dict[str, Any]:
    return tiny("audio_encoder")


@pytest.fixture(scope="session")
def tiny_clip(tiny: TinyOverrides) -> dict[str, Any]:
    return tiny("text_encoder")


@pytest.fixture(scope="session")
def tiny_sd(tiny: TinyOverrides) -> dict[str, Any]:
    return tiny("generator")


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The openvino backend's compiled-model cache, shared by the suite's workers (their tiny weights are the
    same, so are the keys): each shape is converted once a run."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # one folder above each worker's own
    return shared / "openvino-cache"


@pytest.fixture
def unwritable_cache(tmp_path: Path) -> Iterator[Path]:
    """A compiled-model cache that cannot be created (under a file, as on a read-only volume, even as root);
    the test's backend must leave the file as it was."""
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    yield blocker / "cache"
    assert blocker.is_file() and blocker.read_bytes() == b""


@pytest.fixture
def start_services() -> Iterator[StartService]:
    """``start(definition, config, backend=None, wait=True)`` → a started service; all stop after the test."""
    started: list[RunningService] = []

    def start(definition: ServiceDefinition, config: ServiceConfig, backend: Backend | None = None, *,
              wait: bool = True) -> RunningService:
        svc = start_service(definition, config, backend, wait=wait, wait_timeout=60)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop(0)


@pytest.fixture
def empty_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Offline, with empty HF and torch caches under ``tmp_path`` (whatever this machine has cached elsewhere)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path
