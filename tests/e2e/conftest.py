"""Fixtures of the CLI's end-to-end tests: the tiny profile as a file, and a short song from examples/."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from audiomemory.stack import MODEL_KINDS

SONG = Path(__file__).resolve().parents[2] / "examples" / "make_song.py"


@pytest.fixture(scope="module")
def profile(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {kind: tiny(kind) for kind in MODEL_KINDS}
    # The full-size OpenL3 CNN (~0.3 s a window a stem at one thread): a frame a second, 3 windows a stem of the
    # 2-s song, not 5 (every one-second bin still holds one).
    overrides["audio_encoder"]["hop_seconds"] = 1.0
    path = tmp_path_factory.mktemp("profile") / "tiny.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return path


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second song (examples/make_song.py) as an MP3."""
    spec = importlib.util.spec_from_file_location("make_song", SONG)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("song") / "song.mp3"
    module.write_mp3(path, module.song(seconds=2.0))
    return path
