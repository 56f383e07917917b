"""OpenL3 weights are data: checked against the sha256 lock beside them and read with weights_only."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from audiomemory.audio_encoder.backends.openl3 import TINY_VARIANT, OpenL3Backend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.errors import FailedPrecondition

WEIGHTS = Path("hub") / "checkpoints" / "torchopenl3_mel128_music_512.pth.tar"  # the tiny profile's variant


class Payload:
    """Unpickling this writes ``marker``: what a crafted weights file would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.fixture
def weights_dir(tmp_path: Path, tiny_encoder: dict[str, Any]) -> Path:
    """A copy of the tiny profile's OpenL3 folder (weights and whatever lock came with them)."""
    return Path(shutil.copytree(tiny_encoder["weights_dir"], tmp_path / "openl3"))


def _load(weights_dir: Path) -> OpenL3Backend:
    backend = OpenL3Backend(AudioEncoderConfig(weights_dir=weights_dir, precision="float32", **TINY_VARIANT))
    backend.load()
    return backend


def test_weights_changed_after_the_lock_is_written_are_refused_naming_both_hashes(weights_dir: Path) -> None:
    file = weights_dir / WEIGHTS
    locked = hashlib.sha256(file.read_bytes()).hexdigest()
    _load(weights_dir)  # the tiny profile's lock (or, without one, this first load's) holds `locked`
    state = torch.load(file, weights_only=True)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}  # same shapes, other weights
    torch.save(state, file)
    now = hashlib.sha256(file.read_bytes()).hexdigest()
    with pytest.raises(FailedPrecondition) as caught:
        _load(weights_dir)
    assert locked in str(caught.value) and now in str(caught.value)


def test_a_weights_file_whose_pickle_runs_code_is_refused_and_nothing_runs(weights_dir: Path) -> None:
    marker = weights_dir / "pwned"
    file = weights_dir / WEIGHTS
    state = torch.load(file, weights_only=True)
    torch.save({**state, "extra": Payload(marker)}, file)
    (weights_dir / "hub" / "checkpoints" / "audiomemory-weights.lock.json").unlink(missing_ok=True)
    with pytest.raises(FailedPrecondition, match="not plain weights"):
        _load(weights_dir)
    assert not marker.exists()


def test_models_pull_records_the_sha256_of_weights_already_in_place(weights_dir: Path) -> None:
    import json

    lock = weights_dir / "hub" / "checkpoints" / "audiomemory-weights.lock.json"
    lock.unlink(missing_ok=True)
    OpenL3Backend.pull(AudioEncoderConfig(weights_dir=weights_dir, **TINY_VARIANT))
    digest = hashlib.sha256((weights_dir / WEIGHTS).read_bytes()).hexdigest()
    assert json.loads(lock.read_text())["sha256"] == {WEIGHTS.name: digest}
