"""Weight hashes: one sha256 fed by files, folders and tensors, one ``sha256:<16 hex>`` revision."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiomemory.runtime import hub
from audiomemory.runtime.weights import WeightHash, revision


def test_revision_is_the_prefix_and_the_first_16_hex_digits() -> None:
    digest = hashlib.sha256(b"weights").hexdigest()
    assert revision(digest) == "sha256:" + digest[:16]
    assert WeightHash().add_bytes(b"weights").revision() == revision(digest)
    assert WeightHash().add_bytes(b"weights").hexdigest() == digest


def test_a_file_hashes_as_its_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes((1 << 22) + 17)  # more than one read block
    path = tmp_path / "w.pt"
    path.write_bytes(data)
    assert WeightHash().add_file(path).hexdigest() == hashlib.sha256(data).hexdigest()


def _folder_digest(folder: Path, names: list[str]) -> str:
    sha = hashlib.sha256()
    for name in sorted(names):
        sha.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return "sha256:" + sha.hexdigest()[:16]


def test_a_folder_hashes_the_chosen_files_paths_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "model.safetensors").write_bytes(b"unet weights")
    (tmp_path / "unet" / "model.fp16.safetensors").write_bytes(b"half copy")
    (tmp_path / "model_index.json").write_text("{}")
    patterns = ["model_index.json", "unet/model.safetensors"]
    chosen = WeightHash().add_folder(tmp_path, patterns).revision()
    assert chosen == _folder_digest(tmp_path, patterns)
    assert hub.content_hash(tmp_path, patterns) == chosen
    # No pattern matches: every file counts.
    every = ["model_index.json", "unet/model.fp16.safetensors", "unet/model.safetensors"]
    before = hub.content_hash(tmp_path, ["*.bin"])
    assert before == _folder_digest(tmp_path, every) != chosen
    # A file renamed changes the hash even with the same bytes.
    (tmp_path / "unet" / "model.safetensors").rename(tmp_path / "unet" / "other.safetensors")
    assert hub.content_hash(tmp_path, ["*.bin"]) != before


def test_tensors_hash_their_names_then_their_raw_bytes() -> None:
    state = {
        "b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # non-contiguous
        "a.bias": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "c.empty": torch.zeros(0),
        "d.flag": torch.tensor([True, False]),
    }
    sha = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        sha.update(key.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        sha.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    assert WeightHash().add_tensors(sorted(state.items())).revision() == "sha256:" + sha.hexdigest()[:16]
    # numpy arrays feed the same bytes as the tensors they equal.
    as_numpy = [(k, v.float().numpy()) for k, v in sorted(state.items()) if k != "a.bias"]
    as_torch = [(k, v.float()) for k, v in sorted(state.items()) if k != "a.bias"]
    assert WeightHash().add_tensors(as_numpy).hexdigest() == WeightHash().add_tensors(as_torch).hexdigest()


@pytest.mark.parametrize("change", ["value", "name", "order"])
def test_any_change_to_the_tensors_changes_the_revision(change: str) -> None:
    named = [("x", torch.ones(3)), ("y", torch.zeros(2))]
    base = WeightHash().add_tensors(named).revision()
    if change == "value":
        named[1] = ("y", torch.tensor([0.0, 1e-7]))
    elif change == "name":
        named[0] = ("z", named[0][1])
    else:
        named.reverse()
    assert WeightHash().add_tensors(named).revision() != base


def _hub_snapshot(cache: Path, model: str, commit: str) -> None:
    repo = cache / f"models--{model.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)  # the last one written is what `main` says now


def test_a_hub_model_loads_the_commit_models_pull_locked_not_where_main_moved(empty_caches: Path) -> None:
    cache = empty_caches / "hf" / "hub"
    pulled, moved = "a" * 40, "b" * 40
    _hub_snapshot(cache, "someone/model", pulled)
    _hub_snapshot(cache, "someone/model", moved)  # main moved on after the pull
    (cache / "audiomemory-revisions.lock.json").write_text(json.dumps({"commits": {"someone/model": pulled}}))
    folder, rev = hub.resolve_model_dir("someone/model", None, ["config.json"], service="generator")
    assert rev == pulled and folder.name == pulled
    folder, rev = hub.resolve_model_dir("someone/model", moved, ["config.json"], service="generator")
    assert rev == moved  # a configured revision is used as given


def test_a_weights_lock_records_on_first_use_and_refuses_a_changed_file(tmp_path: Path) -> None:
    from audiomemory.runtime.errors import FailedPrecondition
    from audiomemory.runtime.weights import LOCK_NAME, check_lock

    file = tmp_path / "w.pt"
    first, second = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()
    check_lock(file, first)  # no entry: recorded (trust on first use)
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == {"sha256": {"w.pt": first}}
    check_lock(file, first)
    with pytest.raises(FailedPrecondition) as caught:
        check_lock(file, second)
    assert first in str(caught.value) and second in str(caught.value)
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(FailedPrecondition, match="unreadable"):
        check_lock(file, first)
