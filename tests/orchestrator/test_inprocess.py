"""The in-process pipeline (benchmarks' baseline) computes what the service path computes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.orchestrator.cache import AudioCache
from audiomemory.runtime.service import RunningService

from .conftest import StartOrchestrator, run_job
from .songs import encode_song

LYRICS = "Hold me now\nUnder the lights\nHold me now"


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_in_process_pipeline_matches_the_service_path(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    pipeline = InProcessPipeline(*(models[k].backend for k in ("separator", "audio_encoder", "text_encoder",
                                                                "generator")))
    generator_config = models["generator"].config
    data = encode_song("flac", 44100, 2, seconds=1.5, seed=5)
    orch = start_orchestrator(models)
    served = run_job(orch.address, data, lyrics=LYRICS, seed=4, steps=2, strength=0.0)
    local = pipeline.run(
        data, lyrics=LYRICS, seed=4, steps=2, strength=0.0,
        guidance=generator_config.default_guidance,  # type: ignore[attr-defined]
        width=generator_config.default_size, height=generator_config.default_size,  # type: ignore[attr-defined]
    )
    # α = 0: text and generator alone decide the image, bit for bit on both paths
    np.testing.assert_array_equal(_pixels(served.png), _pixels(local.png))
    # the audio vector: same stems, the separator's own conversion, same encoder (tolerance: float sums may differ)
    cache = AudioCache(orch.config.cache_dir)  # type: ignore[attr-defined]
    (entry,) = list(cache.root.glob("*/*.amc"))
    cached = cache.get(entry.stem)
    assert cached is not None
    np.testing.assert_allclose(local.pooled, cached.pooled, rtol=2e-2, atol=2e-3)
    assert set(local.timings) == {"decode", "separate", "embed", "encode_text", "fuse", "generate"}
