"""The openvino generator backend: the compiled-model cache, its keys and limits, precision, identity."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiomemory.generator.backends import ImageRequest
from audiomemory.generator.backends.openvino import (
    MAX_COMPILED_SHAPES,
    OpenVINOBackend,
    openvino_precision,
    runtime_versions,
)
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.allocator import find_tcmalloc
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput
from audiomemory.runtime.identity import identity
from audiomemory.runtime.registry import load_backend

#: Listed besides the tiny profile's 64x64 (the service tests paint 64x96 too: with the shared cache, read).
SIZES = "64x96, 96x64"
RNG = np.random.default_rng(5)
REQUEST = ImageRequest(prompt_embeds=RNG.standard_normal((1, 77, 32)).astype(np.float32),
                       negative_prompt_embeds=np.zeros((1, 77, 32), np.float32), seed=11, steps=3, guidance=7.5,
                       width=64, height=64, scheduler="")


def paint(backend: StableDiffusionBackend, request: ImageRequest = REQUEST) -> np.ndarray:
    return np.asarray(backend.generate(request, lambda done, total: None, lambda: False).image, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def loaded(cls: type[StableDiffusionBackend], tiny_sd: dict[str, Any], **settings: Any) -> Any:
    backend = cls(GeneratorConfig(device="cpu", precision="float32", **{**tiny_sd, "backend": cls.name, **settings}))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def eager(tiny_sd: dict[str, Any]) -> StableDiffusionBackend:
    return loaded(StableDiffusionBackend, tiny_sd)


@pytest.fixture(scope="module")
def compiled(tiny_sd: dict[str, Any], compiled_cache: Path) -> OpenVINOBackend:
    backend: OpenVINOBackend = loaded(OpenVINOBackend, tiny_sd, compiled_cache=str(compiled_cache),
                                      compiled_sizes=SIZES)
    return backend


def test_the_backend_is_registered_by_entry_point() -> None:
    assert load_backend("generator", "openvino") is OpenVINOBackend


@pytest.mark.parametrize(("scheduler", "guidance"), [("pndm", 7.5), ("euler_a", 7.5), ("dpm++2m", 7.5), ("", 0.0)])
def test_its_images_are_the_eager_float32_images_within_40_db(
    eager: StableDiffusionBackend, compiled: OpenVINOBackend, scheduler: str, guidance: float
) -> None:
    # guidance 0: one row a call, run as two through the two-row graph
    request = replace(REQUEST, scheduler=scheduler, guidance=guidance)
    assert psnr(paint(compiled, request), paint(eager, request)) >= 40.0


def test_a_second_start_reads_the_cache_and_paints_the_same_image(
    tiny_sd: dict[str, Any], compiled_cache: Path, compiled: OpenVINOBackend
) -> None:
    first = paint(compiled)
    folder = next(compiled_cache.glob(f"*/{runtime_versions()}"))
    assert (folder / "unet-2x32x32.xml").is_file() and (folder / "unet-2x32x32.bin").is_file()
    assert folder.parent.name == compiled.describe().revision.replace(":", "_")
    again = loaded(OpenVINOBackend, tiny_sd, compiled_cache=str(compiled_cache))
    assert again._unets is not None and again._unets.timings["convert_s"] == 0.0  # read, not traced
    np.testing.assert_array_equal(paint(again), first)


@pytest.mark.long
def test_a_cache_that_cannot_be_written_converts_in_memory(unwritable_cache: Path, tiny_sd: dict[str, Any],
                                                            compiled: OpenVINOBackend) -> None:
    backend: OpenVINOBackend = loaded(OpenVINOBackend, tiny_sd, compiled_cache=str(unwritable_cache))
    assert backend._unets is not None and backend._unets.timings["convert_s"] > 0
    np.testing.assert_array_equal(paint(backend), paint(compiled))


def test_the_listed_sizes_are_converted_at_start_and_compiled_on_first_use_and_at_most_a_few_stay(
    compiled: OpenVINOBackend
) -> None:
    assert compiled._unets is not None and compiled.sizes == ((64, 64), (64, 96), (96, 64))
    folder = compiled._unets.folder
    assert all((folder / f"unet-2x{h // 2}x{w // 2}.xml").is_file() for w, h in compiled.sizes)  # at load
    for width, height, guidance in ((64, 96, 7.5), (64, 64, 0.0), (96, 64, 7.5), (64, 64, 7.5)):
        request = replace(REQUEST, width=width, height=height, guidance=guidance, steps=1)
        assert compiled.generate(request, lambda d, t: None, lambda: False).image.size == (width, height)
    held = list(compiled._unets._compiled)
    assert MAX_COMPILED_SHAPES == len(held) == 2 and held == [(2, 32, 48), (2, 32, 32)]  # (2, 48, 32) left


def test_a_size_not_listed_is_refused_before_any_graph_is_made(compiled: OpenVINOBackend) -> None:
    """A caller never chooses a graph to convert (~40 s of CPU and ~3.4 GB of IR a size for SD 1.5)."""
    assert compiled._unets is not None
    files = sorted(compiled._unets.folder.glob("unet-*"))
    held = list(compiled._unets._compiled)
    for width, height in ((96, 96), (64, 72), (1024, 1024)):
        with pytest.raises(InvalidInput, match=rf"width x height: .*only 64x64, 64x96, 96x64 .* got {width}x{height}"):
            compiled.generate(replace(REQUEST, width=width, height=height), lambda d, t: None, lambda: False)
    with pytest.raises(InvalidInput, match="width x height"):  # below the request check too
        compiled._unets.compiled((2, 48, 48), 77, 32)
    assert sorted(compiled._unets.folder.glob("unet-*")) == files and list(compiled._unets._compiled) == held


@pytest.mark.parametrize(("setting", "needle"), [
    ("512x", "WIDTHxHEIGHT"), ("512 by 512", "WIDTHxHEIGHT"), ("500", "multiples of 8"), ("2048x512", "64..1024"),
])
def test_a_bad_size_list_is_refused_naming_the_setting(setting: str, needle: str) -> None:
    with pytest.raises(ValueError, match=rf"compiled_sizes: .*{needle}"):
        GeneratorConfig(compiled_sizes=setting)
    assert GeneratorConfig(default_size=512, compiled_sizes=" 512, 768 x 512,512").sizes() == ((512, 512), (768, 512))


def test_a_batch_paints_each_item_as_alone(compiled: OpenVINOBackend) -> None:
    prompts = RNG.standard_normal((2, 77, 32)).astype(np.float32)
    batch = replace(REQUEST, prompt_embeds=prompts, seeds=(3, 4))
    images = compiled.generate_batch(batch, lambda d, t: None, lambda: False)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(np.asarray(image.image, dtype=np.float64), paint(compiled, batch.item(index)))


def test_its_identity_is_its_own(eager: StableDiffusionBackend, compiled: OpenVINOBackend) -> None:
    info = compiled.describe()
    assert (info.backend, info.dtype, info.device) == ("openvino", "float32", "cpu")
    assert info.extra["runtime"].startswith("openvino ") and info.extra["vae_dtype"] == "float32"
    # a pin names the replica's identity: an eager replica's pin never lands on an openvino one, nor back
    assert identity(info.to_proto("generator")) != identity(eager.describe().to_proto("generator"))


@pytest.mark.parametrize(("flags", "chosen"), [
    (frozenset({"avx2", "fma"}), "float32"),  # AMD EPYC Zen 3 (this project's machines without AVX-512)
    (frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}), "bfloat16"),  # EPYC Zen 4
    (frozenset({"avx512f", "amx_bf16", "amx_int8", "amx_tile"}), "bfloat16"),  # Xeon with AMX
])
def test_auto_precision_follows_the_cpu(flags: frozenset[str], chosen: str) -> None:
    assert openvino_precision("auto", flags) == chosen
    assert openvino_precision("float32", flags) == "float32"


def test_what_it_cannot_run_is_refused_naming_the_setting(tiny_sd: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition, match=r"precision.*float16"):
        openvino_precision("float16")
    with pytest.raises(FailedPrecondition, match=r"device.*cuda"):
        OpenVINOBackend(GeneratorConfig(device="cuda", **tiny_sd)).torch_dtype("cuda")


def test_it_runs_under_tcmalloc_as_the_cli_and_the_images_start_it(compiled: OpenVINOBackend) -> None:
    """The services run with tcmalloc preloaded; OpenVINO's oneTBB crashed there ("free(): invalid pointer") as
    soon as an IR was read, until importing the backend set TBB_ENABLE_SANITIZERS (runtime/compiled.py, which
    both OpenVINO backends import): a fresh process, tcmalloc preloaded, the variable unset, the backend imported,
    then the cached IR read and compiled."""
    library = find_tcmalloc()
    assert library is not None, "tcmalloc is one of the project's system packages (scripts/install_system_packages.sh)"
    assert compiled._unets is not None
    ir = compiled._unets.ir_file(compiled._unets.shapes[0])
    script = (
        "import audiomemory.generator.backends.openvino, openvino; core = openvino.Core();"
        f"compiled = core.compile_model(core.read_model({str(ir)!r}), 'CPU'); print('compiled', len(compiled.inputs))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TBB_ENABLE_SANITIZERS"} | {"LD_PRELOAD": str(library)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # without that line: -6, "free(): invalid pointer"
    assert done.stdout.split()[-2:] == ["compiled", "3"]
