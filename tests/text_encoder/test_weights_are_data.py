"""Hugging Face weights are loaded from safetensors only: a folder holding pickle-format .bin weights is refused."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.text_encoder.backends.clip import ClipBackend
from audiomemory.text_encoder.config import TextEncoderConfig


def test_a_model_folder_with_only_pickle_format_weights_is_refused(tmp_path: Path, tiny_clip: dict[str, Any]) -> None:
    folder = Path(shutil.copytree(tiny_clip["model"], tmp_path / "clip"))
    converted = 0
    for weights in folder.rglob("model.safetensors"):  # the same weights, as transformers' legacy pickle file
        torch.save(load_file(str(weights)), weights.with_name("pytorch_model.bin"))
        weights.unlink()
        converted += 1
    assert converted == 1
    with pytest.raises(FailedPrecondition, match="only safetensors"):
        ClipBackend(TextEncoderConfig(model=str(folder))).load()
