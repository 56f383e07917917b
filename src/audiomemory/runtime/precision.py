"""One policy for what runs where (docs/DESIGN.md §9): the arithmetic a backend computes in on a device, and
which backend ``backend: auto`` runs.

Every backend's ``precision`` setting goes through ``choose_precision``: an explicit setting is honoured
as it is (the backend refuses one it cannot run); ``auto`` picks, from what the backend can run
(``supports``, beside float32) and the device:

- CUDA: float16 where the backend runs it (the generator: tensor cores, half the memory), else float32;
- a CPU with int8 dot products (VNNI, AMX: ``INT8_DOT_FLAGS``): int8 where the backend runs it (the
  audio encoder's CNN, with torch's x86 quantised engine);
- a CPU with native bfloat16 (avx512_bf16 or AMX: ``NATIVE_BF16_FLAGS``): bfloat16 where the backend runs
  it (without them PyTorch emulates bf16 through float32, slower than float32);
- else float32 (no fast float16 kernels on CPUs).

The CPU's flags are read once, from ``/proc/cpuinfo`` (``cpu_flags``); tests pass flags in instead.
The answer is the backend's ``ModelInfo.dtype``, which ``Describe`` and every call's ``Served`` header carry.

``backend: auto`` (``choose_backend``, ``AUTO_BACKENDS``): on CUDA the eager backend (the only one with CUDA
paths); on a CPU the compiled one (OpenVINO) where it is installed, except on CPUs with the instructions under
which the eager backend's own ``auto`` precision was measured to win at the fidelity rule. The answer is the
backend's name in ``Describe`` and every ``Served`` header, never "auto".
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

#: /proc/cpuinfo flags of x86 CPUs with bfloat16 dot-product instructions (oneDNN's native bf16
#: convolutions and matmuls).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: /proc/cpuinfo flags of x86 CPUs with int8 dot-product instructions (VNNI, AMX): int8 without 16-bit overflow.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: What ``auto`` may pick besides float32, in the order it prefers them on a CPU.
_CPU_ORDER = (("int8", INT8_DOT_FLAGS), ("bfloat16", NATIVE_BF16_FLAGS))


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first ``flags`` line of ``cpuinfo`` (x86 Linux), read once; empty where there is none (macOS, ARM)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_int8_dot(flags: frozenset[str] | None = None) -> bool:
    """Whether a CPU with ``flags`` (this one's by default) has int8 dot-product instructions."""
    return bool((cpu_flags() if flags is None else flags) & INT8_DOT_FLAGS)


def choose_precision(setting: str, device_type: str, supports: Collection[str] = (),
                     flags: frozenset[str] | None = None) -> str:
    """"float32", "bfloat16", "float16" or "int8" for a backend set to ``setting`` on a ``device_type``
    ("cpu", "cuda", "mps"…) device whose CPU has ``flags`` (this machine's by default). ``supports``: what
    the backend's ``auto`` may run besides float32 (see the module docstring)."""
    if setting != "auto":
        return setting
    if device_type == "cuda":
        return "float16" if "float16" in supports else "float32"
    if device_type != "cpu":
        return "float32"
    have = cpu_flags() if flags is None else flags
    for mode, needs in _CPU_ORDER:
        if mode in supports and have & needs:
            return mode
    return "float32"


@dataclass(frozen=True)
class AutoBackend:
    """What ``backend: auto`` picks for one kind of service: ``compiled`` on a CPU, the kind's default (eager)
    backend on CUDA or where the CPU has any of ``eager_on`` (or the compiled backend is not installed)."""

    compiled: str
    eager_on: frozenset[str] = frozenset()


#: Measured on a 2-core AVX2 EPYC (BENCHMARKS.md "Generator backends", "Separator and audio encoder backends"):
#: OpenVINO's float32 UNet x1.07 a step (87 dB), HTDemucs x1.04-1.06 (89.5 dB), OpenL3's CNN x1.16 on the
#: front half (the pooled-vector rule met). Where the CPU has int8 dot products OpenL3's own ``auto`` is int8,
#: ~2x its float32 (OpenVINO f32: 1.27x); where it has native bf16, htdemucs' own ``auto`` is bf16 (>= 45 dB;
#: OpenVINO bf16 not measured against the stems rule). SD's UNet: OpenVINO on every CPU (Intel's published
#: Sapphire Rapids figures: static-shape OpenVINO ~7x eager float32).
AUTO_BACKENDS: dict[str, AutoBackend] = {
    "audio_encoder": AutoBackend("openvino", INT8_DOT_FLAGS),  # else openl3
    "separator": AutoBackend("openvino", NATIVE_BF16_FLAGS),  # else demucs
    "generator": AutoBackend("openvino"),  # else stable-diffusion
}


def choose_backend(kind: str, setting: str, device_type: str, installed: Collection[str], default: str,
                   flags: frozenset[str] | None = None) -> str:
    """The backend a ``kind`` service set to ``setting`` runs on a ``device_type`` device whose CPU has ``flags``
    (this machine's by default), given the ``installed`` backends; ``default``: the kind's own default (eager)
    backend, what ``auto`` means wherever the compiled one is not picked, and for a kind with one backend."""
    if setting != "auto":
        return setting
    rule = AUTO_BACKENDS.get(kind)
    if rule is None or device_type != "cpu" or rule.compiled not in installed:
        return default
    have = cpu_flags() if flags is None else flags
    return default if have & rule.eager_on else rule.compiled
