"""Swapping one model service: the orchestrator in front of the openvino generator, the other services untouched."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from audiomemory.client import read_record
from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.service import DEFINITION as GENERATOR
from audiomemory.runtime.identity import identity
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import orchestrator_pb2_grpc

from .conftest import StartOrchestrator, requests, run_job
from .songs import encode_song


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def test_the_same_job_through_the_openvino_generator_paints_the_same_image_and_records_it(
    models: dict[str, RunningService], tiny: Callable[[str], dict[str, Any]], compiled_cache: Path,
    start_orchestrator: StartOrchestrator, start_services: Callable[..., RunningService],
) -> None:
    # float32 pinned on both (the session's generator runs auto: float32 on a CPU without native bf16 — compared
    # only where that holds) so the images can be compared; one line of config swaps the backend.
    eager = start_services(GENERATOR, GeneratorConfig(port=0, device="cpu", torch_threads=1, precision="float32",
                                                      **tiny("generator")))
    compiled = start_services(GENERATOR, GeneratorConfig(
        port=0, device="cpu", torch_threads=1, precision="float32", compiled_cache=str(compiled_cache),
        **{**tiny("generator"), "backend": "openvino"}))
    song = encode_song("wav", 22050, 1, seconds=0.5, seed=4)
    results, orchestrators = {}, {}
    for name, generator in (("stable-diffusion", eager), ("openvino", compiled)):
        orchestrator = start_orchestrator({**models, "generator": generator})  # Describe + compatibility at start
        results[name] = run_job(orchestrator.address, song, lyrics="under the lights", seed=9, steps=3)
        orchestrators[name] = orchestrator
    records = {name: read_record(result.png) for name, result in results.items()}
    ran = records["openvino"]
    assert ran is not None and ran.served["generator"].model.backend == "openvino"
    assert ran.served["generator"].model.extra["runtime"].startswith("openvino ")
    assert ran.served["generator"].identity == identity(ran.served["generator"].model)
    before = records["stable-diffusion"]
    assert before is not None and before.served["generator"].identity != ran.served["generator"].identity
    for kind in ("separator", "audio_encoder", "text_encoder"):  # the other services: untouched, the same
        assert before.served[kind].identity == ran.served[kind].identity
    mse = ((_pixels(results["openvino"].png) - _pixels(results["stable-diffusion"].png)) ** 2).mean()
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40.0
    assert pytest.approx(ran.fusion.strength) == before.fusion.strength

    # The openvino generator paints only its compiled sizes (Describe lists them): the orchestrator refuses another
    # before the song is decoded or separated, naming the fields, the sizes and what came.
    with grpc.insecure_channel(orchestrators["openvino"].address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        stages = []
        with pytest.raises(grpc.RpcError) as caught:
            for response in stub.CreateImage(requests(song, lyrics="x", width=96, height=64), timeout=60):
                stages.append(response.event.stage)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert all(needle in caught.value.details() for needle in ("options.width x options.height", "64x64", "96x64"))
    assert stages == []
