"""The one precision policy (runtime.precision): what ``auto`` picks for each backend on each kind of machine,
from the CPU flags passed in (never this machine's), and the one reading of /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiomemory.audio_encoder.backends.int8 import resolve_precision as encoder_precision
from audiomemory.audio_encoder.backends.int8 import x86_int8_engine
from audiomemory.generator.backends.stable_diffusion import compute_dtype
from audiomemory.runtime.precision import choose_backend, choose_precision, cpu_flags
from audiomemory.separator.backends.numerics import resolve_precision as separator_precision
from audiomemory.stack import definition

#: An AMD EPYC (Zen 4) with avx512_bf16 and VNNI, no AMX.
EPYC = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
#: An Intel Xeon (Sapphire Rapids) with AMX.
XEON = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"})
#: An AMD Zen 3 with neither (avx2 only), like the machine these tests were written on.
ZEN3 = frozenset({"avx", "avx2", "fma"})


def _all(device: str, flags: frozenset[str]) -> tuple[str, str, str]:
    """(separator, audio encoder, generator) for ``auto`` on ``device`` with ``flags``."""
    gen = compute_dtype("auto", device, flags)
    return (separator_precision("auto", torch.device(device), flags),
            encoder_precision("auto", torch.device(device), flags), str(gen).removeprefix("torch."))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (EPYC, ("bfloat16", "int8", "bfloat16")),
        (XEON, ("bfloat16", "int8", "bfloat16")),
        (ZEN3, ("float32", "float32", "float32")),
    ],
    ids=["epyc-avx512_bf16", "xeon-amx", "zen3-avx2"],
)
def test_auto_on_a_cpu_follows_its_flags(flags: frozenset[str], expected: tuple[str, str, str]) -> None:
    if not x86_int8_engine():  # the encoder's int8 needs torch's x86 engine; this build's decides
        expected = (expected[0], "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32", expected[2])
    assert _all("cpu", flags) == expected


def test_auto_on_cuda_is_float16_only_for_the_generator() -> None:
    assert _all("cuda", XEON) == ("float32", "float32", "float16")
    assert _all("cuda", frozenset()) == ("float32", "float32", "float16")


def test_auto_elsewhere_is_float32() -> None:
    assert _all("mps", XEON) == ("float32", "float32", "float32")


def test_int8_needs_vnni_and_bf16_needs_native_bf16() -> None:
    both = ("int8", "bfloat16")
    assert choose_precision("auto", "cpu", both, frozenset({"avx512_vnni"})) == "int8"
    assert choose_precision("auto", "cpu", both, frozenset({"avx_vnni"})) == "int8"
    assert choose_precision("auto", "cpu", ("bfloat16",), frozenset({"avx512_vnni"})) == "float32"
    assert choose_precision("auto", "cpu", both, frozenset({"amx_bf16"})) == "bfloat16"
    assert choose_precision("auto", "cpu", (), XEON) == "float32"


def test_an_explicit_setting_is_honoured_whatever_the_machine() -> None:
    assert choose_precision("bfloat16", "cpu", (), ZEN3) == "bfloat16"
    assert choose_precision("float32", "cuda", ("float16",), XEON) == "float32"
    assert separator_precision("bfloat16", torch.device("cpu"), ZEN3) == "bfloat16"
    assert compute_dtype("float32", "cuda", XEON) == torch.float32


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: spectre\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


BACKENDS = {"separator": ["demucs", "openvino"], "audio_encoder": ["openl3", "openvino"],
            "generator": ["openvino", "stable-diffusion"]}
DEFAULTS = {kind: definition(kind).config_class.model_fields["backend"].default for kind in BACKENDS}


def _backends(device: str, flags: frozenset[str], installed: dict[str, list[str]] = BACKENDS) -> tuple[str, ...]:
    """(separator, audio encoder, generator) for ``backend: auto`` on ``device`` with ``flags``."""
    return tuple(choose_backend(kind, "auto", device, installed[kind], DEFAULTS[kind], flags)
                 for kind in ("separator", "audio_encoder", "generator"))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (ZEN3, ("openvino", "openvino", "openvino")),  # measured here: each OpenVINO backend the faster float32
        (EPYC, ("demucs", "openl3", "openvino")),  # htdemucs in native bf16, OpenL3 in VNNI int8
        (XEON, ("demucs", "openl3", "openvino")),
        (frozenset({"avx2", "avx_vnni"}), ("openvino", "openl3", "openvino")),  # int8 dots without native bf16
    ],
    ids=["zen3-avx2", "epyc-avx512_bf16", "xeon-amx", "avx_vnni"],
)
def test_backend_auto_on_a_cpu_follows_its_flags(flags: frozenset[str], expected: tuple[str, ...]) -> None:
    assert _backends("cpu", flags) == expected


def test_backend_auto_is_the_eager_backend_on_cuda_or_without_openvino() -> None:
    assert _backends("cuda", ZEN3) == ("demucs", "openl3", "stable-diffusion")
    eager_only = {kind: [name for name in names if name != "openvino"] for kind, names in BACKENDS.items()}
    assert _backends("cpu", ZEN3, eager_only) == ("demucs", "openl3", "stable-diffusion")


def test_backend_auto_of_a_kind_with_one_backend_is_its_default_and_a_name_is_kept() -> None:
    assert choose_backend("text_encoder", "auto", "cpu", ["clip"], "clip", ZEN3) == "clip"
    assert choose_backend("separator", "demucs", "cpu", BACKENDS["separator"], "demucs", ZEN3) == "demucs"
    assert choose_backend("generator", "mine", "cuda", ["mine"], "stable-diffusion", XEON) == "mine"


@pytest.mark.parametrize(("flags", "expected"), [(ZEN3, "openvino"), (XEON, "openl3")], ids=["zen3", "xeon"])
def test_a_service_set_to_auto_builds_the_chosen_installed_backend(flags: frozenset[str], expected: str) -> None:
    d = definition("audio_encoder")
    config = d.config_class(backend="auto", device="cpu")
    assert d.backend_name(config, flags) == expected
    assert d.make_backend_class(d.backend_name(config, flags)).name == expected
    assert d.backend_name(d.config_class(backend="openl3"), ZEN3) == "openl3"
