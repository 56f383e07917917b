"""Demucs weights are read as data: a file whose pickle or metadata would run code is refused, and nothing runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state

from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.separator.backends.demucs import TINY_KWARGS, DemucsBackend
from audiomemory.separator.config import SeparatorConfig


class Payload:
    """Unpickling this writes ``marker``: what a crafted ``.th`` would do with a shell command instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _package(extra: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(4)
    model = HTDemucs(**TINY_KWARGS)
    return {"klass": HTDemucs, "args": [], "kwargs": dict(TINY_KWARGS), "state": get_state(model, None), **extra}


def test_a_th_whose_pickle_runs_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    repo = tmp_path / "repo"
    repo.mkdir()
    torch.save(_package({"training_args": Payload(marker)}), repo / "evilsig.th")
    (repo / "evil.yaml").write_text(yaml.safe_dump({"models": ["evilsig"]}))
    backend = DemucsBackend(SeparatorConfig(model="evil", repo=repo))
    with pytest.raises(FailedPrecondition, match="not plain weights") as caught:
        backend.load()
    assert "evilsig.th" in str(caught.value)
    assert not marker.exists()


def test_a_th_naming_a_class_that_is_no_demucs_model_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    package = _package({})
    package["klass"] = torch.nn.Linear  # allowed by torch's own weights_only list, but no Demucs model
    package["args"], package["kwargs"], package["state"] = [2, 2], {}, {}
    torch.save(package, repo / "linsig.th")
    with pytest.raises(FailedPrecondition, match="not plain weights"):
        DemucsBackend(SeparatorConfig(model="linsig", repo=repo)).load()


def test_a_safetensors_naming_a_callable_as_its_class_is_refused_and_nothing_runs(empty_caches: Path) -> None:
    from safetensors.torch import save_file

    marker = empty_caches / "pwned"
    snapshot = empty_caches / "hf" / "hub" / "models--adefossez--HTDemucs" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    (snapshot / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["955717e8"]}))
    code = f"open({str(marker)!r}, 'w').write('ran')"
    metadata = {"klass": "builtins.exec", "args": json.dumps([code]), "kwargs": "{}"}
    save_file({"x": torch.zeros(1)}, str(snapshot / "955717e8.safetensors"), metadata=metadata)
    with pytest.raises(FailedPrecondition, match="not a Demucs model class"):
        DemucsBackend(SeparatorConfig(model="htdemucs")).load()
    assert not marker.exists()
