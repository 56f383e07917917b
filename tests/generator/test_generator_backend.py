"""The stable-diffusion backend in-process: loading, the tiny profile, stop semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiomemory.generator.backends import GenerationStopped, ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput, ModelUnavailable
from audiomemory.runtime.registry import load_backend


@pytest.fixture(scope="module")
def backend(tiny_sd: dict[str, Any]) -> StableDiffusionBackend:
    loaded = StableDiffusionBackend(GeneratorConfig(device="cpu", **tiny_sd))
    loaded.load()
    return loaded


def request(**fields: Any) -> ImageRequest:
    rng = np.random.default_rng(0)
    base: dict[str, Any] = {
        "prompt_embeds": rng.standard_normal((1, 77, 32)).astype(np.float32),
        "negative_prompt_embeds": np.zeros((1, 77, 32), np.float32),
        "seed": 3,
        "steps": 3,
        "guidance": 5.0,
        "width": 64,
        "height": 64,
        "scheduler": "ddim",
    }
    return ImageRequest(**{**base, **fields})


def test_stable_diffusion_backend_is_registered_under_its_entry_point() -> None:
    assert load_backend("generator", "stable-diffusion") is StableDiffusionBackend


def test_tiny_profile_is_a_pipeline_folder_without_text_encoder(tiny_sd: dict[str, Any]) -> None:
    index = json.loads((Path(tiny_sd["model"]) / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == [None, None] and index["safety_checker"] == [None, None]
    unet = json.loads((Path(tiny_sd["model"]) / "unet" / "config.json").read_text())
    assert unet["cross_attention_dim"] == 32  # == the tiny CLIP's hidden size
    assert tiny_sd["default_size"] == 64


def test_stop_before_the_first_step_runs_no_step(backend: StableDiffusionBackend) -> None:
    steps: list[int] = []
    with pytest.raises(GenerationStopped) as caught:
        backend.generate(request(), lambda s, n: steps.append(s), lambda: True)
    assert steps == [] and caught.value.steps_run == 0


def test_stop_after_a_step_skips_the_rest_and_the_decode(backend: StableDiffusionBackend) -> None:
    steps: list[int] = []
    with pytest.raises(GenerationStopped) as caught:
        backend.generate(request(steps=8), lambda s, n: steps.append(s), lambda: len(steps) >= 3)
    assert steps == [1, 2, 3]
    assert (caught.value.steps_run, caught.value.total_steps) == (3, 8)


def test_generate_reports_what_ran(backend: StableDiffusionBackend) -> None:
    result = backend.generate(request(scheduler="euler"), lambda s, n: None, lambda: False)
    assert (result.scheduler, result.steps_run, result.total_steps) == ("euler", 3, 3)
    assert result.image.size == (64, 64) and result.image.mode == "RGB"


def test_in_process_requests_are_validated_too(backend: StableDiffusionBackend) -> None:
    with pytest.raises(InvalidInput, match="steps"):
        backend.generate(request(steps=0), lambda s, n: None, lambda: False)
    with pytest.raises(InvalidInput, match=r"embedding dim 16 does not match .* 32"):
        emb = np.zeros((1, 77, 16), np.float32)
        backend.generate(request(prompt_embeds=emb, negative_prompt_embeds=emb), lambda s, n: None, lambda: False)


def test_configured_default_scheduler_must_exist(tiny_sd: dict[str, Any]) -> None:
    chosen = StableDiffusionBackend(GeneratorConfig(device="cpu", default_scheduler="euler_a", **tiny_sd))
    chosen.load()
    assert chosen.default_scheduler == "euler_a" and chosen.schedulers[0] == "euler_a"
    unknown = StableDiffusionBackend(GeneratorConfig(device="cpu", default_scheduler="nope", **tiny_sd))
    with pytest.raises(FailedPrecondition, match="default_scheduler"):
        unknown.load()


def test_safety_checker_cannot_be_switched_on(tiny_sd: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition, match="safety checker"):
        StableDiffusionBackend(GeneratorConfig(device="cpu", safety_checker=True, **tiny_sd)).load()


def test_missing_hub_model_offline_names_the_model_and_the_ways_out() -> None:
    backend = StableDiffusionBackend(GeneratorConfig(model="audiomemory-tests/no-such-pipeline", device="cpu"))
    with pytest.raises(ModelUnavailable) as caught:
        backend.load()
    message = str(caught.value)
    assert "audiomemory-tests/no-such-pipeline" in message
    assert "models pull" in message and "AUDIOMEMORY_GENERATOR_MODEL" in message
