"""The in-process adapter of the job's stages runs the same job code as the services and computes the same image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.client import read_record
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
    kinds = ("separator", "audio_encoder", "text_encoder", "generator")
    pipeline = InProcessPipeline(*(models[k].backend for k in kinds), configs={k: models[k].config for k in kinds})
    data = encode_song("flac", 44100, 2, seconds=0.5, seed=5)
    orch = start_orchestrator(models)
    for strength in (0.0, 0.5):
        served = run_job(orch.address, data, lyrics=LYRICS, seed=4, steps=2, strength=strength)
        local = pipeline.run(data, lyrics=LYRICS, seed=4, steps=2, strength=strength)
        # the audio vector: the same stems, conversion and windows on both paths (only the batches the
        # encoder forms may differ, which moves float sums in their last bits)
        meta = read_record(served.png)
        assert meta is not None
        cache = AudioCache(orch.config.cache_dir)  # type: ignore[attr-defined]
        (entry,) = list(cache.root.glob("*/*.amc"))
        cached = cache.get(entry.stem)
        assert cached is not None
        np.testing.assert_allclose(local.pooled, cached.pooled, rtol=1e-4, atol=1e-5)
        # α = 0 and α = 0.5: the same image, bit for bit
        np.testing.assert_array_equal(_pixels(served.png), _pixels(local.png))
        assert meta.fusion.steered is (strength > 0)
        # the same identities ran, and both records say so
        for kind in kinds:
            assert local.record.served[kind].identity == meta.served[kind].identity
        assert local.record.generation.steps == meta.generation.steps == 2
    assert set(local.timings) == {"decode", "audio", "encode_text", "fuse", "generate"}
