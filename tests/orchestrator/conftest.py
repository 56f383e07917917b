"""Fixtures for the orchestrator: the four tiny model services on real gRPC, orchestrators in front."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.service import DEFINITION
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.stack import MODEL_KINDS, definition
from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

CHUNK = 256 * 1024


@pytest.fixture(scope="session")
def models(tiny: Callable[[str], dict[str, Any]]) -> Iterator[dict[str, RunningService]]:
    """The four model services with their tiny random-weight models, one per session."""
    services: dict[str, RunningService] = {}
    # Every tiny model is written before any service starts loading: writing one (transformers' save) while
    # another service loads in a background thread (accelerate's init_empty_weights patches torch for the
    # whole process) can build the new model's weights on the meta device.
    written = {kind: tiny(kind) for kind in MODEL_KINDS}
    try:
        for kind in MODEL_KINDS:
            d = definition(kind)
            # The tiny OpenL3 keeps the real network's size (only its weights are random): a coarse hop
            # keeps the frame count, and so these tests, small. (The tiny Whisper decodes at most 32 tokens a
            # window: the profile's own cap, whisper.TINY_MAX_NEW_TOKENS.)
            extra: dict[str, Any] = {"hop_seconds": 0.5} if kind == "audio_encoder" else {}
            config = d.config_class(port=0, device="cpu", torch_threads=1, **written[kind], **extra)
            services[kind] = start_service(d, config)
        for svc in services.values():
            svc.wait_ready(300)
        yield services
    finally:
        for svc in services.values():
            svc.stop(0)


@pytest.fixture(scope="session")
def coarse_models(models: dict[str, RunningService], tiny: Callable[[str], dict[str, Any]]
                  ) -> Iterator[dict[str, RunningService]]:
    """``models`` with an audio encoder framing once a second (every one-second bin still holds a frame): the
    full-size OpenL3 CNN of the tiny profile embeds 3 windows a stem of a 2-s song, not 5 (~0.3 s a window)."""
    d = definition("audio_encoder")
    config = d.config_class(port=0, device="cpu", torch_threads=1, **tiny("audio_encoder"), hop_seconds=1.0,
                            max_hop_seconds=1.0, hop_growth_seconds=0)
    encoder = start_service(d, config)
    try:
        encoder.wait_ready(300)
        yield {**models, "audio_encoder": encoder}
    finally:
        encoder.stop(0)


def targets(services: dict[str, RunningService]) -> dict[str, Any]:
    return {f"{kind}_target": svc.address for kind, svc in services.items()}


StartOrchestrator = Callable[..., RunningService]


@pytest.fixture
def start_orchestrator(tmp_path: Path, start_services: Callable[..., RunningService]) -> StartOrchestrator:
    """``start(services, wait=True, **config)`` → an orchestrator in front of ``services``, stopped after the test."""
    caches = itertools.count()

    def start(services: dict[str, RunningService], *, wait: bool = True, **config: Any) -> RunningService:
        # Every test caller is 127.0.0.1, one caller to the job gate's share and the calls-per-caller limit:
        # neither unless a test sets them.
        settings: dict[str, Any] = {
            "port": 0, "cache_dir": tmp_path / f"cache{next(caches)}", "connect_timeout_seconds": 30,
            "caller_share": None, "max_calls_per_caller": None, **targets(services), **config,
        }
        return start_services(DEFINITION, OrchestratorConfig(**settings), wait=wait)

    return start


@pytest.fixture(scope="module")
def orchestrator(models: dict[str, RunningService], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[RunningService]:
    """One orchestrator shared by a module, with small limits so limit tests stay small."""
    config = OrchestratorConfig(
        port=0, cache_dir=tmp_path_factory.mktemp("cache"), max_upload_bytes=2_000_000, max_seconds=8.0,
        caller_share=None, max_calls_per_caller=None, **targets(models),
    )
    svc = start_service(DEFINITION, config, wait=True, wait_timeout=60)
    yield svc
    svc.stop(0)
    svc.backend.close()


@dataclass
class JobResult:
    events: list[orchestrator_pb2.StageEvent] = field(default_factory=list)
    png: bytes = b""
    metadata_json: str = ""
    pieces: int = 0

    @property
    def image(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.png))
        image.load()
        return image


def requests(data: bytes, **options: Any) -> Iterator[orchestrator_pb2.CreateImageRequest]:
    yield orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions(**options))
    for start in range(0, len(data), CHUNK):
        yield orchestrator_pb2.CreateImageRequest(file_chunk=data[start : start + CHUNK])


def run_job(address: str, data: bytes, *, timeout: float = 120, **options: Any) -> JobResult:
    """One CreateImage over a fresh channel with raw stubs; raises grpc.RpcError on failure."""
    options.setdefault("steps", 2)
    result = JobResult()
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        png = bytearray()
        for response in stub.CreateImage(requests(data, **options), timeout=timeout):
            if response.WhichOneof("item") == "event":
                result.events.append(response.event)
            else:
                assert len(response.result.png) < 1 << 20
                png += response.result.png
                result.pieces += 1
                if response.result.last:
                    result.metadata_json = response.result.metadata_json
        result.png = bytes(png)
    return result
