"""separate_blocks reproduces Demucs' whole-song apply_model block by block (tiny random models)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from demucs.apply import apply_model

from audiomemory.separator.backends.demucs import TINY_KWARGS, DemucsBackend, normalise_, write_repo
from audiomemory.separator.config import SeparatorConfig

from .streams import tone


def reference(backend: DemucsBackend, audio: np.ndarray, overlap: float) -> np.ndarray:
    """Demucs' own whole-song answer on the same normalised mix, de-normalised the same way."""
    mix = torch.from_numpy(audio.copy())
    mean, scale = normalise_(mix)
    with torch.inference_mode():
        out = apply_model(backend._loaded(), mix[None], shifts=0, split=True, overlap=overlap, progress=False)[0]
        return out.mul_(scale).add_(mean).numpy()


def blocks_of(backend: DemucsBackend, audio: np.ndarray) -> tuple[list[int], np.ndarray]:
    blocks = list(backend.separate_blocks(audio, 44100))
    return [b.start for b in blocks], np.concatenate([b.audio for b in blocks], axis=-1)


@pytest.fixture(scope="module")
def backend(tiny_separator: dict[str, Any]) -> DemucsBackend:
    # float32: the exactness claim is about the same arithmetic as apply_model (no bf16 autocast).
    loaded = DemucsBackend(SeparatorConfig(precision="float32", **tiny_separator))
    loaded.load()  # once: a fresh model pays seconds of oneDNN warm-up on its first calls
    return loaded


@pytest.mark.parametrize("overlap", [0.25, 0.6])
def test_blocks_concatenate_to_apply_models_whole_song_output(backend: DemucsBackend, overlap: float) -> None:
    backend.config = backend.config.model_copy(update={"overlap": overlap})
    audio = tone(44100, 2, 2.3, seed=5)  # 101430 frames: not a multiple of the stride
    starts, got = blocks_of(backend, audio)
    assert len(starts) > 1 and starts[0] == 0
    assert got.shape == (4, 2, audio.shape[1])
    np.testing.assert_array_equal(got, reference(backend, audio, overlap))  # bit for bit


def test_bag_of_two_models_with_per_source_weights_and_other_segments_matches_apply_model(tmp_path: Path) -> None:
    # Sub-model b's 0.75 s segments end stretches where a's 1 s ones do not (short ones: quick on a CPU).
    write_repo(tmp_path, "a", {**TINY_KWARGS, "segment": Fraction(1)}, seed=1)
    write_repo(tmp_path, "b", {**TINY_KWARGS, "segment": Fraction(3, 4)}, seed=2)
    weights = [[1.0, 0.5, 2.0, 0.0], [0.25, 1.0, 1.0, 3.0]]
    (tmp_path / "duo.yaml").write_text(yaml.safe_dump({"models": ["asig", "bsig"], "weights": weights}))
    backend = DemucsBackend(SeparatorConfig(model="duo", repo=tmp_path, precision="float32"))
    backend.load()
    assert backend.describe().extra["models_in_bag"] == "2"
    audio = tone(44100, 2, 1.3, seed=6)
    starts, got = blocks_of(backend, audio)
    assert len(starts) > 2
    np.testing.assert_array_equal(got, reference(backend, audio, 0.25))  # bit for bit
