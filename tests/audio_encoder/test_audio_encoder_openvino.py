"""The openvino audio encoder backend: OpenL3's CNN compiled by OpenVINO against the float32 one, its cache, what
it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.audio_encoder.backends.openvino import OpenVINOOpenL3Backend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.identity import identity
from audiomemory.runtime.registry import load_backend
from audiomemory.stack import definition

#: Windows of the tiny profile's OpenL3 (the full-size CNN, random weights): 1 s at 48 kHz each.
WINDOWS = np.random.default_rng(7).uniform(-0.5, 0.5, (5, 48_000)).astype(np.float32)


def loaded(cls: type[OpenL3Backend], tiny_encoder: dict[str, Any], **settings: Any) -> Any:
    backend = cls(AudioEncoderConfig(**{"precision": "float32", **tiny_encoder, "backend": cls.name, **settings}))
    backend.load()
    return backend


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def eager(tiny_encoder: dict[str, Any]) -> OpenL3Backend:
    return loaded(OpenL3Backend, tiny_encoder)


@pytest.fixture(scope="module")
def compiled(tiny_encoder: dict[str, Any], compiled_cache: Path) -> OpenVINOOpenL3Backend:
    backend: OpenVINOOpenL3Backend = loaded(OpenVINOOpenL3Backend, tiny_encoder, compiled_cache=str(compiled_cache))
    return backend


def test_the_backend_is_registered_by_entry_point() -> None:
    assert load_backend("audio_encoder", "openvino") is OpenVINOOpenL3Backend


def test_its_frames_are_the_float32_frames_to_rounding_at_any_batch(
    eager: OpenL3Backend, compiled: OpenVINOOpenL3Backend
) -> None:
    reference = eager.embed_windows(WINDOWS)
    for rows in (1, 2, 5):  # one converted graph, a dynamic batch
        frames = compiled.embed_windows(WINDOWS[:rows])
        assert frames.shape == reference[:rows].shape and frames.dtype == np.float32
        assert cosines(frames, reference[:rows]).min() >= 0.99999
        np.testing.assert_allclose(frames, reference[:rows], rtol=1e-3, atol=1e-4)


def test_a_second_start_reads_the_cache_and_embeds_the_same(
    tiny_encoder: dict[str, Any], compiled_cache: Path, compiled: OpenVINOOpenL3Backend
) -> None:
    files = list(compiled_cache.glob("*/*-torchopenl3-*/openl3-cnn-1x*.xml"))
    assert len(files) == 1 and files[0].with_suffix(".bin").is_file()
    again: OpenVINOOpenL3Backend = loaded(OpenVINOOpenL3Backend, tiny_encoder, compiled_cache=str(compiled_cache))
    assert again.timings["convert_s"] == 0.0  # read, not converted
    np.testing.assert_array_equal(again.embed_windows(WINDOWS), compiled.embed_windows(WINDOWS))


@pytest.mark.long
def test_a_cache_that_cannot_be_written_converts_in_memory(
    unwritable_cache: Path, tiny_encoder: dict[str, Any], compiled: OpenVINOOpenL3Backend
) -> None:
    backend: OpenVINOOpenL3Backend = loaded(OpenVINOOpenL3Backend, tiny_encoder,
                                            compiled_cache=str(unwritable_cache))
    assert backend.timings["convert_s"] > 0
    assert cosines(backend.embed_windows(WINDOWS), compiled.embed_windows(WINDOWS)).min() >= 0.999999


def test_its_identity_is_its_own(eager: OpenL3Backend, compiled: OpenVINOOpenL3Backend) -> None:
    info = compiled.describe()
    assert (info.backend, info.dtype, info.device) == ("openvino", "float32", "cpu")
    assert info.extra["runtime"].startswith("openvino ") and info.revision == eager.describe().revision
    # its vectors never share a cache entry or a pin with the torch backend's
    assert identity(info.to_proto("audio_encoder")) != identity(eager.describe().to_proto("audio_encoder"))


@pytest.mark.parametrize(("settings", "needle"), [({"precision": "int8"}, "precision.*int8"),
                                                  ({"device": "cuda"}, "device.*cuda")])
def test_what_it_cannot_run_is_refused_naming_the_setting(tiny_encoder: dict[str, Any], settings: dict[str, str],
                                                         needle: str) -> None:
    with pytest.raises(FailedPrecondition, match=needle):
        OpenVINOOpenL3Backend(AudioEncoderConfig(**{**tiny_encoder, **settings}))


def test_a_service_set_to_auto_runs_and_describes_the_backend_chosen_for_this_cpu(
    tiny_encoder: dict[str, Any], compiled_cache: Path, compiled: OpenVINOOpenL3Backend
) -> None:
    d = definition("audio_encoder")
    config = AudioEncoderConfig(**{**tiny_encoder, "backend": "auto", "device": "cpu",
                                   "compiled_cache": str(compiled_cache)})
    chosen = d.backend_name(config)
    assert chosen in ("openl3", "openvino")  # openvino here (avx2 only), openl3 on a CPU with VNNI or AMX
    backend = d.make_backend(config)
    backend.load()
    assert type(backend) is load_backend("audio_encoder", chosen)
    assert backend.describe().backend == chosen and backend.config.backend == chosen  # never "auto"
