"""The demucs backend without gRPC: loading paths, Demucs' quirks wrapped, facts read from the model."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state

from audiomemory.runtime.errors import Cancelled, FailedPrecondition, InvalidInput
from audiomemory.separator.backends.demucs import TINY_KWARGS, DemucsBackend, write_repo
from audiomemory.separator.backends.numerics import resolve_precision
from audiomemory.separator.config import SeparatorConfig

from .streams import tone


@pytest.fixture(scope="module")
def backend(tiny_separator: dict[str, Any]) -> DemucsBackend:
    loaded = DemucsBackend(SeparatorConfig(**tiny_separator))
    loaded.load()
    return loaded


def test_callers_read_only_array_is_accepted_and_left_unchanged(backend: DemucsBackend) -> None:
    audio = tone(44100, 2, 0.5)
    before = audio.copy()
    audio.setflags(write=False)  # what the codec hands over: a zero-copy view of the message
    backend.separate(audio, 44100)
    np.testing.assert_array_equal(audio, before)


def test_silence_separates_to_finite_silence_not_nan(backend: DemucsBackend) -> None:
    # Demucs' own normalisation divides by the std of the mix, 0 here.
    stems = backend.separate(np.zeros((2, 4410), np.float32), 44100)
    assert np.isfinite(stems.audio).all()
    assert stems.audio.shape == (4, 2, 4410)


def test_single_frame_input_gives_single_frame_stems(backend: DemucsBackend) -> None:
    assert backend.separate(np.full((1, 1), 0.5, np.float32), 44100).audio.shape == (4, 2, 1)


@pytest.mark.parametrize(
    ("audio", "rate", "needle"),
    [
        (np.zeros((3, 10), np.float32), 44100, "1 or 2 channels, got 3"),
        (np.zeros((2, 0), np.float32), 44100, "empty"),
        (np.zeros(10, np.float32), 44100, "[channels, frames]"),
        (np.zeros((2, 10), np.float64), 44100, "float32"),
        (np.full((2, 10), np.nan, np.float32), 44100, "finite"),
        (np.zeros((2, 10), np.float32), 0, "sample_rate"),
    ],
)
def test_bad_arrays_raise_invalid_input_not_assertion(
    backend: DemucsBackend, audio: np.ndarray, rate: int, needle: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        backend.separate(audio, rate)
    assert needle in str(caught.value)


def test_cancel_check_stops_separation(backend: DemucsBackend) -> None:
    with pytest.raises(Cancelled):
        backend.separate(tone(44100, 2, 3.0), 44100, cancelled=lambda: True)


def test_segment_longer_than_the_model_allows_is_refused(tiny_separator: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition, match=r"segment: 5.0 s is longer than model 'tiny' allows \(2.0 s\)"):
        DemucsBackend(SeparatorConfig(segment=5.0, **tiny_separator)).load()


def test_corrupted_weights_are_model_unavailable(tmp_path: Path) -> None:
    overrides = DemucsBackend.write_tiny(tmp_path)
    (weights,) = Path(overrides["repo"]).glob("*.th")
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(FailedPrecondition, match="Invalid checksum"):
        DemucsBackend(SeparatorConfig(**overrides)).load()


def write_model(repo: Path, name: str, **changes: Any) -> None:
    """A one-model bag ``name`` in a Demucs local repo, from the tiny kwargs with ``changes`` (seed 1)."""
    write_repo(repo, name, {**TINY_KWARGS, **changes}, seed=1)


def test_describe_and_output_follow_the_loaded_model_not_constants(tmp_path: Path) -> None:
    write_model(tmp_path, "duo", sources=["vocals", "accompaniment"], samplerate=32000)
    backend = DemucsBackend(SeparatorConfig(model="duo", repo=tmp_path))
    backend.load()
    assert backend.stems == ("vocals", "accompaniment") and backend.sample_rate == 32000
    info = backend.describe()
    assert info.model_id == "duo" and info.extra["stems"] == "vocals,accompaniment"
    assert info.extra["sample_rate"] == "32000"
    stems = backend.separate(tone(48000, 1, 0.5), 48000)
    assert stems.names == ("vocals", "accompaniment") and stems.audio.shape == (2, 2, 16000)


def test_weights_change_the_reported_revision(tmp_path: Path, tiny_separator: dict[str, Any]) -> None:
    write_model(tmp_path, "tiny")  # same architecture, other seed
    mine, theirs = DemucsBackend(SeparatorConfig(model="tiny", repo=tmp_path)), DemucsBackend(
        SeparatorConfig(**tiny_separator)
    )
    mine.load()
    theirs.load()
    assert mine.describe().revision != theirs.describe().revision


def test_pretrained_name_loads_offline_from_the_torch_hub_cache(empty_caches: Path) -> None:
    # Where demucs' legacy loader caches htdemucs (remote/files.txt → hybrid_transformer/955717e8-8726e21a.th).
    checkpoints = empty_caches / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(2)
    package = {"klass": HTDemucs, "args": [], "kwargs": TINY_KWARGS, "state": get_state(HTDemucs(**TINY_KWARGS), None)}
    torch.save(package, checkpoints / "955717e8-8726e21a.th")
    backend = DemucsBackend(SeparatorConfig(model="htdemucs"))
    backend.load()
    assert backend.describe().extra["source"] == "the torch hub cache"
    assert backend.separate(tone(44100, 2, 0.3), 44100).audio.shape == (4, 2, 13230)


def test_pretrained_name_loads_offline_from_the_hugging_face_cache(empty_caches: Path) -> None:
    from safetensors.torch import save_file

    # The layout huggingface_hub leaves for adefossez/HTDemucs: refs/main → snapshots/<commit>/files.
    repo = empty_caches / "hf" / "hub" / "models--adefossez--HTDemucs"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "htdemucs.yaml").write_text(yaml.safe_dump({"models": ["955717e8"]}))
    kwargs = {k: ({"_type": "fraction", "numerator": v.numerator, "denominator": v.denominator}
                  if isinstance(v, Fraction) else v) for k, v in TINY_KWARGS.items()}
    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in HTDemucs(**TINY_KWARGS).state_dict().items()}
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(kwargs)}
    save_file(state, str(snapshot / "955717e8.safetensors"), metadata=metadata)
    backend = DemucsBackend(SeparatorConfig(model="htdemucs"))
    backend.load()
    assert backend.describe().extra["source"] == "the Hugging Face cache"
    assert backend.stems == ("drums", "bass", "other", "vocals")


@pytest.mark.parametrize(
    ("precision", "dtype", "reported"),
    [("float32", "float32", "float32"), ("bfloat16", "bfloat16", "bfloat16-autocast")],
)
def test_describe_reports_the_arithmetic_precision_in_the_identity(
    tiny_separator: dict[str, Any], precision: str, dtype: str, reported: str
) -> None:
    backend = DemucsBackend(SeparatorConfig(precision=precision, **tiny_separator))
    backend.load()
    info = backend.describe()
    assert (info.dtype, info.extra["precision"]) == (dtype, reported)


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_native_bf16() -> None:
    assert resolve_precision("auto", torch.device("cuda"), frozenset({"avx512_bf16"})) == "float32"
    assert resolve_precision("auto", torch.device("cpu"), frozenset({"avx512_bf16"})) == "bfloat16"
    assert resolve_precision("auto", torch.device("cpu"), frozenset({"amx_bf16", "amx_int8"})) == "bfloat16"
    assert resolve_precision("auto", torch.device("cpu"), frozenset({"avx2", "avx512_vnni"})) == "float32"
    assert resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"


def test_random_shifts_fall_back_to_one_whole_song_block(tiny_separator: dict[str, Any]) -> None:
    backend = DemucsBackend(SeparatorConfig(shifts=1, **tiny_separator))
    backend.load()
    blocks = list(backend.separate_blocks(tone(44100, 2, 0.6), 44100))
    assert [(b.start, b.audio.shape) for b in blocks] == [(0, (4, 2, 26460))]
