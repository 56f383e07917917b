"""The openvino separator backend: its stems against eager float32, the compiled-model cache, what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.identity import identity
from audiomemory.runtime.registry import load_backend
from audiomemory.separator.backends.demucs import DemucsBackend
from audiomemory.separator.backends.openvino import CompiledHTDemucs, OpenVINODemucsBackend
from audiomemory.separator.config import SeparatorConfig

from .streams import tone

RATE = 44100


def loaded(cls: type[DemucsBackend], tiny_separator: dict[str, Any], **settings: Any) -> Any:
    backend = cls(SeparatorConfig(device="cpu", precision="float32", **{**tiny_separator, "backend": cls.name,
                                                                        **settings}))
    backend.load()
    return backend


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    error = float(((other.astype(np.float64) - reference) ** 2).sum())
    return float("inf") if error == 0 else 10 * np.log10(float((reference.astype(np.float64) ** 2).sum()) / error)


@pytest.fixture(scope="module")
def eager(tiny_separator: dict[str, Any]) -> DemucsBackend:
    return loaded(DemucsBackend, tiny_separator)


@pytest.fixture(scope="module")
def compiled(tiny_separator: dict[str, Any], compiled_cache: Path) -> OpenVINODemucsBackend:
    backend: OpenVINODemucsBackend = loaded(OpenVINODemucsBackend, tiny_separator,
                                            compiled_cache=str(compiled_cache))
    return backend


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return tone(RATE, 2, 5.5, seed=3)  # several segments of the tiny model, the last one short


def test_the_backend_is_registered_by_entry_point() -> None:
    assert load_backend("separator", "openvino") is OpenVINODemucsBackend


def test_its_stems_are_the_eager_float32_stems_within_the_30_db_rule(
    eager: DemucsBackend, compiled: OpenVINODemucsBackend, song: np.ndarray
) -> None:
    reference, stems = eager.separate(song, RATE), compiled.separate(song, RATE)
    assert stems.names == reference.names and stems.audio.shape == reference.audio.shape
    for index, name in enumerate(reference.names):
        assert snr_db(reference.audio[index], stems.audio[index]) >= 30.0, name
    assert snr_db(reference.audio, stems.audio) >= 80.0  # float32 both: measured ~110 dB on this model


def test_a_second_start_reads_the_cache_and_separates_the_same(
    tiny_separator: dict[str, Any], compiled_cache: Path, compiled: OpenVINODemucsBackend, song: np.ndarray
) -> None:
    files = list(compiled_cache.glob("*/*-demucs-*/htdemucs-0-2x*.xml"))
    assert len(files) == 1 and files[0].with_suffix(".bin").is_file()
    again: OpenVINODemucsBackend = loaded(OpenVINODemucsBackend, tiny_separator, compiled_cache=str(compiled_cache))
    assert again.timings["convert_s"] == 0.0 and again.compiled_models == 1  # read, not traced
    np.testing.assert_array_equal(again.separate(song, RATE).audio, compiled.separate(song, RATE).audio)


@pytest.mark.long
def test_a_cache_that_cannot_be_written_converts_in_memory(
    unwritable_cache: Path, tiny_separator: dict[str, Any], compiled: OpenVINODemucsBackend, song: np.ndarray
) -> None:
    backend: OpenVINODemucsBackend = loaded(OpenVINODemucsBackend, tiny_separator,
                                            compiled_cache=str(unwritable_cache))
    assert backend.timings["convert_s"] > 0
    # compiled from the graph in memory rather than from the file: the same to float32 rounding
    assert snr_db(compiled.separate(song, RATE).audio, backend.separate(song, RATE).audio) >= 100.0


def test_a_call_of_another_shape_runs_the_torch_model(compiled: OpenVINODemucsBackend, eager: DemucsBackend) -> None:
    model = compiled._loaded().models[0]
    assert isinstance(model.forward, CompiledHTDemucs)
    batch = torch.from_numpy(np.stack([tone(RATE, 2, 1.0, seed=s) for s in (1, 2)]))  # two rows: not converted
    with torch.no_grad():
        torch.testing.assert_close(model(batch), eager._loaded().models[0](batch))


def test_its_identity_is_its_own(eager: DemucsBackend, compiled: OpenVINODemucsBackend) -> None:
    info = compiled.describe()
    assert (info.backend, info.dtype, info.device) == ("openvino", "float32", "cpu")
    assert info.extra["runtime"].startswith("openvino ") and info.extra["compiled_models"] == "1"
    assert info.revision == eager.describe().revision  # the same weights
    # a pin names the replica's identity: an eager replica's pin never lands on an openvino one, nor back
    assert identity(info.to_proto("separator")) != identity(eager.describe().to_proto("separator"))


def test_a_device_other_than_the_cpu_is_refused_naming_it(tiny_separator: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition, match=r"device.*cuda"):
        OpenVINODemucsBackend(SeparatorConfig(device="cuda", **tiny_separator)).load()
