"""OpenL3's CNN in int8: which precision a machine gets, the calibration input, static quantisation.

``resolve_precision`` picks the CNN's compute mode through the one precision policy (``runtime.precision``;
``auto``: int8 on an x86 CPU with int8 dot products, else bf16 where native, else float32; see
``openl3``'s docstring for the figures).
``quantise_int8`` quantises a float CNN with PyTorch FX for x86, its activation ranges calibrated on
``calibration_windows`` (seeded synthetic audio) and kept in a small file so a later load reads them.
"""

from __future__ import annotations

import copy
import logging
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiomemory.runtime.errors import FailedPrecondition, shorten
from audiomemory.runtime.precision import choose_precision, has_int8_dot

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # OpenL3's input rate; one window is 1 s
CALIBRATION_WINDOWS = 16  # int8 calibration windows (calibration_windows)


def x86_int8_engine() -> bool:
    """True when this torch build has its x86 quantised engine (FBGEMM/oneDNN), which int8 runs on."""
    return "x86" in torch.backends.quantized.supported_engines


def cpu_has_int8_dot() -> bool:
    """True on an x86 CPU with int8 dot-product instructions (VNNI or AMX) and torch's x86 int8 engine."""
    return x86_int8_engine() and has_int8_dot()


def resolve_precision(precision: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """The CNN's compute mode, "float32", "bfloat16" or "int8", for ``precision`` on ``device`` whose CPU has
    ``flags`` (this machine's by default), as the one precision policy decides it; an explicit int8 that
    cannot run here is refused."""
    if precision == "int8" and device.type != "cpu":
        raise FailedPrecondition(f"audio_encoder: precision int8 runs on the CPU only, the device is {device}")
    if precision == "int8" and not x86_int8_engine():
        raise FailedPrecondition(
            "audio_encoder: precision int8 needs torch's x86 quantised engine, which this build lacks "
            f"(it has {list(torch.backends.quantized.supported_engines)}); use auto, bfloat16 or float32"
        )
    # The CNN runs int8 only on torch's x86 engine, and never float16 (CUDA keeps float32).
    supports = ("int8", "bfloat16") if x86_int8_engine() else ("bfloat16",)
    return choose_precision(precision, device.type, supports, flags)


def calibration_windows(count: int = CALIBRATION_WINDOWS, seed: int = 0) -> np.ndarray:
    """``count`` seeded synthetic 1-s windows at 48 kHz for int8 calibration: ``[count, 48000]`` float32.

    Each is one to four harmonic tones (40 Hz–2.6 kHz fundamentals, seven partials, repeating decays)
    plus coloured noise bursts, at −60 to 0 dB; every fourth is noise alone. The CNN
    sees each window's log-mel spectrogram normalised to its own maximum, so what calibration needs
    is the spread of spectral shapes, not real recordings: calibrated on these, int8 frames of a real
    song were as close to float32 (cosine ≥ 0.9998) as when calibrated on another real song.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    bins = np.maximum(1, np.arange(SAMPLE_RATE // 2 + 1))
    out = np.zeros((count, SAMPLE_RATE), np.float32)
    for i in range(count):
        tones = np.zeros(SAMPLE_RATE)
        for _ in range(int(rng.integers(1, 5))):
            f0 = 40 * 2 ** rng.uniform(0, 6)
            decay = np.exp(-rng.uniform(0, 6) * ((t * rng.integers(1, 5)) % 1))
            partials = range(1, 8)
            tones += decay * sum(rng.uniform(0, 1) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                                 for k in partials)
        noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(SAMPLE_RATE)) / bins ** rng.uniform(0, 1), SAMPLE_RATE)
        noise *= np.exp(-rng.uniform(0, 20) * ((t * rng.integers(1, 9)) % 1)) / (np.abs(noise).max() + 1e-9)
        signal = tones / (np.abs(tones).max() + 1e-9) * (i % 4 != 3) + rng.uniform(0, 1) * noise
        out[i] = signal * 10 ** rng.uniform(-3, 0)
    return out


def quantise_int8(cnn: nn.Module, inputs: torch.Tensor, ranges: Path | None = None) -> nn.Module:
    """``cnn`` quantised to int8 for x86 (static, per-channel weights), calibrated on ``inputs`` (a batch).

    ``ranges``: a file for the calibrated activation ranges (the observers' min/max, a few KB). When it
    exists they are read from it instead of running ``inputs`` through the CNN (~5 s on one core; the
    same numbers); when it does not, they are written to it (a read-only place is skipped). ``cnn``
    itself is left as it was (it is copied before FX fuses and observes it).
    """
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    # Min-max activation ranges: as close to float32 as torch's default histograms here, in 60 % of the time
    # (cosine ≥ 0.99989 per frame on a real song). The full 8-bit range needs VNNI (no 16-bit overflow).
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(reduce_range=not cpu_has_int8_dot()),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notes
        prepared = prepare_fx(copy.deepcopy(cnn), QConfigMapping().set_global(qconfig), example_inputs=(inputs[:1],))
        if not _read_ranges(prepared, ranges):
            for start in range(0, inputs.shape[0], 2):  # min/max do not depend on the batching
                prepared(inputs[start : start + 2])
            _write_ranges(prepared, ranges)
        return convert_fx(prepared)


def _observed(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in prepared.state_dict().items() if "activation_post_process" in k}


def _read_ranges(prepared: nn.Module, ranges: Path | None) -> bool:
    if ranges is None or not ranges.is_file():
        return False
    try:
        saved = torch.load(ranges, map_location="cpu", weights_only=True)
        if set(saved) != set(_observed(prepared)):
            raise KeyError("not this network's observers")
        prepared.load_state_dict(saved, strict=False)
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        log.warning("int8 ranges %s unreadable (%s); calibrating again", ranges, shorten(exc))
        return False
    return True


def _write_ranges(prepared: nn.Module, ranges: Path | None) -> None:
    if ranges is None:
        return
    partial = ranges.with_name(ranges.name + ".partial")
    try:
        torch.save(_observed(prepared), partial)
        partial.replace(ranges)
    except OSError as exc:
        log.info("int8 ranges not kept (%s): the next load calibrates again", shorten(exc))
