"""The ``openl3`` audio encoder backend, on ``torchopenl3`` (1.0.1).

Framing, resampling and batching are ``audiomemory.audio_encoder.stream``'s (the centre rule of
OpenL3's ``center=True``, as torchopenl3 does it); this backend states its facts (48 kHz, 1-s windows,
``hop_seconds``) and embeds batches of windows.

Precision (``precision``): ``float32``; ``bfloat16``, the CNN under ``torch.autocast(bfloat16)``; or
``int8``, the CNN statically quantised for x86 (PyTorch FX, per-channel weights, activations
calibrated at load on ``calibration_windows``: seeded synthetic tones and coloured noise, so every
load of the same weights gives the same int8 model). The spectrogram front end stays float32 in all
three (its dB scale and per-window max normalisation are where low precision would hurt; it is
6–10 % of a float32 window). ``auto`` picks int8 on an x86 CPU with int8 dot products (VNNI, AMX),
else bf16 on a CPU with native bf16 instructions (``avx512_bf16`` or AMX), else float32; CUDA keeps
float32. On a 2-core AVX512 EPYC the CNN ran at ~14 windows/s in bf16 and ~31 in int8 (fp32 ~6),
every frame at cosine ≥ 0.9998 to float32 in int8 (≥ 0.99998 in bf16); through the pipeline both keep
the fidelity rule of docs/DESIGN.md §9 (BENCHMARKS.md).
The hop grows with the signal's length (``hop_for``; config ``hop_growth_seconds``). The precision
and the hop rule are part of ``describe()``, so their vectors never share a cache entry.

Weights are torchopenl3's ``torchopenl3_<repr>_<content>_<size>.pth.tar`` in torch.hub's layout
(``<weights_dir>/hub/checkpoints``, passed explicitly instead of changing ``TORCH_HOME`` for the
whole process), but fetched from a pinned commit, checked against the sha256 lock beside them and
read with ``weights_only=True`` (``openl3_weights``). A missing file with no network fails at once,
naming the file and the two ways out.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiomemory.audio_encoder.backends import AudioEncoderBackend, openl3_weights
from audiomemory.audio_encoder.backends.int8 import (
    CALIBRATION_WINDOWS,
    calibration_windows,
    cpu_has_int8_dot,
    quantise_int8,
    resolve_precision,
)
from audiomemory.runtime.backend import HOW_TO_GET, ModelInfo, download_blocked, offline, resolve_device
from audiomemory.runtime.errors import FailedPrecondition, ModelUnavailable, shorten
from audiomemory.runtime.weights import WeightHash, record_lock, revision

if TYPE_CHECKING:
    from audiomemory.audio_encoder.config import AudioEncoderConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # OpenL3's input rate
WINDOW = SAMPLE_RATE  # one window is 1 s


def weights_filename(input_repr: str, content_type: str, embedding_size: int) -> str:
    """File name torchopenl3 downloads (and torch.hub caches) for one variant."""
    return f"torchopenl3_{input_repr}_{content_type}_{embedding_size}.pth.tar"


def checkpoints_dir(weights_dir: Path | None) -> Path:
    """``<weights_dir>/hub/checkpoints``, or torch's own (``$TORCH_HOME/hub/checkpoints``) when None."""
    if weights_dir is None:
        return Path(torch.hub.get_dir()) / "checkpoints"
    return Path(weights_dir) / "hub" / "checkpoints"


def spectrogram(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """torchopenl3's ``speclayer(x)`` ([B, 1, samples] → [B, bins, frames, 1]) through ``torch.stft``.

    torchopenl3 (after kapre 0.1.4) takes the STFT as a 1-D convolution with 2×1025 windowed DFT
    kernels of 2048 taps: ~0.8 GFLOP a window, 3–5× the time of an FFT for the same numbers (to
    float32 rounding: ~1e-5 dB on average, ≤ 0.01 dB in quiet bins, on its 80-dB scale). Everything
    after the STFT — same padding, the mel matrix, the magnitude power, the dB scale with its
    per-window max — is the layer's own.
    """
    mel = hasattr(layer, "mel_basis")
    if mel and layer.padding == "same":
        x = layer.custom_pad(x)
    # librosa's get_window("hann", fftbins=True), as the DFT kernels use, is the periodic Hann window.
    window = torch.hann_window(layer.n_dft, periodic=True, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.squeeze(1), n_fft=layer.n_dft, hop_length=layer.n_hop, window=window, center=False, return_complex=True
    )
    out = spec.real.square() + spec.imag.square()  # power, [B, n_dft/2 + 1, frames]
    if mel:
        out = torch.matmul(layer.mel_basis, out)
    power, decibel = (
        (layer.power_melgram, layer.return_decibel_melgram)
        if mel
        else (layer.power_spectrogram, layer.return_decibel_spectrogram)
    )
    if power != 2.0:
        out = torch.pow(torch.sqrt(out), power)
    out = out.unsqueeze(-1)
    return layer.amplitude_to_decibel(out) if decibel else out


def window_spectrograms(model: Any, windows: np.ndarray) -> torch.Tensor:
    """``[B, 48000]`` windows → the CNN's input ``[B, 1, bins, frames]`` (float32)."""
    with torch.no_grad():
        return spectrogram(model.speclayer, torch.from_numpy(windows)[:, None]).squeeze(-1).unsqueeze(1)


#: OpenL3's convolution blocks after the input norm: (conv, its batch norm, max-pool after it).
BLOCKS = (
    ("conv2d_1", "batch_normalization_2", False),
    ("conv2d_2", "batch_normalization_3", True),
    ("conv2d_3", "batch_normalization_4", False),
    ("conv2d_4", "batch_normalization_5", True),
    ("conv2d_5", "batch_normalization_6", False),
    ("conv2d_6", "batch_normalization_7", True),
    ("conv2d_7", "batch_normalization_8", False),
)


def cnn_layers(model: Any) -> nn.Sequential:
    """OpenL3's CNN, input norm to the last convolution, as one module (zero padding as layers, for FX)."""
    layers: list[nn.Module] = [model.batch_normalization_1]
    for conv, norm, pool in BLOCKS:
        layers += [nn.ZeroPad2d(1), getattr(model, conv), getattr(model, norm), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.ZeroPad2d(1), model.audio_embedding_layer]
    return nn.Sequential(*layers).eval()


def lean_forward(
    model: Any, x: torch.Tensor, dtype: torch.dtype = torch.float32, quantised: nn.Module | None = None
) -> torch.Tensor:
    """``PytorchOpenl3.forward`` with the same layers in the same order, without its memory cost.

    torchopenl3's forward keeps every intermediate in a local variable until it returns: at batch
    128 that is ~13 GB alive at once (each early activation is [128, 64, 256, 199] float32, 1.7 GB).
    Here each intermediate is dropped as soon as the next exists, so the peak is about three of
    them. Inference only (ReLU in place); the STFT by FFT (``spectrogram``). Same embeddings:
    ``test_embeddings_equal_torchopenl3``.
    The spectrogram front end always runs in float32; the CNN runs under autocast when ``dtype`` is
    lower, or as ``quantised`` (``quantise_int8``) when given (see the module docstring). Returns
    float32 ``[B, D]``.
    """
    x = spectrogram(model.speclayer, x).squeeze(-1).unsqueeze(1)
    if quantised is not None:
        x = quantised(x)
    else:
        x = model.batch_normalization_1(x)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            for conv, norm, pool in BLOCKS:
                x = F.relu(getattr(model, norm)(getattr(model, conv)(F.pad(x, (1, 1, 1, 1)))), inplace=True)
                if pool:
                    x = F.max_pool2d(x, kernel_size=(2, 2), stride=(2, 2))
            x = model.audio_embedding_layer(F.pad(x, (1, 1, 1, 1)))
    size = model.AUDIO_POOLING_SIZES[model.input_repr][model.embedding_size]
    x = F.max_pool2d(x.float(), kernel_size=size, stride=size)
    return x.swapaxes(1, 2).swapaxes(2, 3).reshape(x.shape[0], -1)


def _new_model(config: AudioEncoderConfig) -> torch.nn.Module:
    with warnings.catch_warnings():
        # librosa warns about empty mel filters at 256 bands; OpenL3 was trained with exactly those.
        warnings.simplefilter("ignore")
        from torchopenl3.models import PytorchOpenl3

        return PytorchOpenl3(
            content_type=config.content_type, input_repr=config.input_repr, embedding_size=config.embedding_size
        )


#: The tiny profile's OpenL3: the real music/mel128/512 architecture (random weights). Its CNN does half the
#: work of mel256's (the default profile's) on every window, and the suite embeds thousands of windows.
TINY_VARIANT: dict[str, Any] = {"input_repr": "mel128"}


class OpenL3Backend(AudioEncoderBackend):
    """OpenL3 (music/mel256/512 by default) over 1-s windows every ``hop_seconds``."""

    name: ClassVar[str] = "openl3"
    config: AudioEncoderConfig

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__(config)
        self._model: torch.nn.Module | None = None
        self._device = torch.device("cpu")
        self._precision = "float32"
        self._quantised: nn.Module | None = None
        self._dim = 0
        self._sha = ""
        self._file = Path()

    # -- loading -------------------------------------------------------------------------------
    def _weights(self) -> Path:
        c = self.config
        return checkpoints_dir(c.weights_dir) / weights_filename(c.input_repr, c.content_type, c.embedding_size)

    def load(self) -> None:
        path = self._weights()
        if not path.is_file():
            if (reason := download_blocked(openl3_weights.WEIGHTS_URL)) is not None:
                raise ModelUnavailable(
                    f"OpenL3 model {self.model_id!r}: weights {path.name!r} are not in {str(path.parent)!r} "
                    f"and cannot be downloaded ({reason}); {HOW_TO_GET}"
                )
            openl3_weights.download(path)
        model = _new_model(self.config)
        state, self._sha = openl3_weights.read_state(path)  # full sha256, for extra; revision() shortens it
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise ModelUnavailable(
                f"OpenL3 weights {str(path)!r} could not be loaded: {type(exc).__name__}: {shorten(exc)}"
            ) from exc
        self._device = resolve_device(self.config.device)
        model.to(self._device).eval()
        self._precision = resolve_precision(self.config.precision, self._device)
        self._quantised = (
            quantise_int8(cnn_layers(model), window_spectrograms(model, calibration_windows()),
                          self.int8_ranges_file(path, self._sha))
            if self._precision == "int8" else None
        )
        # One window of silence proves the weights run and measures D from the model itself.
        with torch.inference_mode():
            probe = lean_forward(model, torch.zeros(1, 1, WINDOW, device=self._device), self._dtype,
                                 self._quantised)
        if probe.ndim != 2 or not torch.isfinite(probe).all():
            raise ModelUnavailable(f"OpenL3 weights {str(path)!r} give no finite embedding of silence")
        self._dim = int(probe.shape[1])
        self._file = path
        self._model = model
        log.info(
            "OpenL3 %s loaded from %s (D=%d, %s, %s)", path.name, path.parent, self._dim, self._device, self.precision
        )

    @staticmethod
    def int8_ranges_file(weights: Path, sha: str) -> Path:
        """Where the int8 activation ranges of these weights are kept: beside them, named by their
        content, the calibration and whether the ranges are reduced (CPUs without VNNI)."""
        reduced = "r" if not cpu_has_int8_dot() else "f"
        return weights.with_name(f"{weights.name}.int8-{sha[:16]}-{CALIBRATION_WINDOWS}{reduced}-v1.pt")

    @classmethod
    def pull(cls, config: AudioEncoderConfig) -> None:  # type: ignore[override]
        """Download the configured variant into ``<weights_dir>/hub/checkpoints`` (or torch's cache) from
        the pinned commit and record its sha256 in the lock beside it; a file already there is checked
        against the lock (or recorded, when it has no entry). Either way it must read as plain weights."""
        path = cls(config)._weights()
        if not path.is_file():
            if offline():
                raise ModelUnavailable(f"OpenL3 weights {path.name!r}: cannot pull while offline mode is set")
            try:
                openl3_weights.download(path)
            except OSError as exc:
                raise ModelUnavailable(f"OpenL3 weights {path.name!r}: download failed: {shorten(exc)}") from exc
        openl3_weights.read_state(path)

    @classmethod
    def write_tiny(cls, root: Path, **variant: Any) -> dict[str, Any]:
        """Random weights of the real OpenL3 architecture, in the hub-cache layout under ``root/openl3``.

        The spectrogram front end (DFT and mel kernels) is deterministic, not random, so the
        input representation is the real one; only the CNN's weights are random (seed 0). The tiny
        profile's variant is ``TINY_VARIANT`` (mel128: the real variant with the least work, half of
        mel256's) unless ``variant`` names another (the benchmarks write mel256, the default profile's).
        """
        from audiomemory.audio_encoder.config import AudioEncoderConfig

        variant = {**TINY_VARIANT, **variant}
        weights_dir = Path(root) / "openl3"
        config = AudioEncoderConfig(weights_dir=weights_dir, **variant)
        rng = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)
            model = _new_model(config)
        finally:
            torch.random.set_rng_state(rng)
        target = checkpoints_dir(weights_dir) / weights_filename(
            config.input_repr, config.content_type, config.embedding_size
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), target)
        record_lock(target, WeightHash().add_file(target).hexdigest())  # as `models pull` does for real ones
        return {"weights_dir": str(weights_dir), **variant}

    # -- facts ---------------------------------------------------------------------------------
    def _loaded(self) -> torch.nn.Module:
        if self._model is None:
            raise FailedPrecondition("audio_encoder: the model is not loaded yet")
        return self._model

    @property
    def model_id(self) -> str:
        c = self.config
        return f"openl3-{c.content_type}-{c.input_repr}-{c.embedding_size}"

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def channels(self) -> int:
        return 1

    @property
    def embedding_dim(self) -> int:
        self._loaded()
        return self._dim

    @property
    def window(self) -> int:
        return WINDOW

    @property
    def hop(self) -> int:
        """Hop in samples at 48 kHz (what the frames really use)."""
        return max(1, round(self.config.hop_seconds * SAMPLE_RATE))

    def hop_for(self, seconds: float) -> int:
        """The hop (samples at 48 kHz) for a signal ``seconds`` long: ``hop`` up to ``hop_growth_seconds``,
        then ``hop_seconds × sqrt(seconds / hop_growth_seconds)`` up to ``max_hop_seconds``, to 0.01 s."""
        c = self.config
        if c.hop_growth_seconds <= 0 or seconds <= c.hop_growth_seconds:
            return self.hop
        grown = min(max(c.hop_seconds, c.max_hop_seconds), c.hop_seconds * math.sqrt(seconds / c.hop_growth_seconds))
        return max(self.hop, round(round(grown, 2) * SAMPLE_RATE))

    @property
    def hop_rule(self) -> str:
        """``hop_for`` in words (part of the identity)."""
        c = self.config
        if c.hop_growth_seconds <= 0:
            return f"fixed {self.hop_seconds:g} s"
        return (f"{self.hop_seconds:g} s up to {c.hop_growth_seconds:g} s, then {self.hop_seconds:g} s x "
                f"sqrt(seconds / {c.hop_growth_seconds:g}) to 0.01 s, at most {c.max_hop_seconds:g} s")

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def _dtype(self) -> torch.dtype:
        return torch.bfloat16 if self._precision == "bfloat16" else torch.float32

    @property
    def precision(self) -> str:
        """The CNN's compute mode: "float32", "bfloat16" or "int8" (valid after ``load``)."""
        return self._precision

    def describe(self) -> ModelInfo:
        model = self._loaded()
        c = self.config
        return ModelInfo(
            backend=self.name,
            model_id=self.model_id,
            revision=revision(self._sha),
            device=str(self._device),
            dtype=self.precision,
            extra={
                "content_type": c.content_type,
                "input_repr": c.input_repr,
                "precision": self.precision,
                "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "embedding_size": str(self._dim),
                "hop_seconds": f"{self.hop_seconds:g}",
                "hop_rule": self.hop_rule,
                "window_seconds": f"{self.window_seconds:g}",
                "sample_rate": str(SAMPLE_RATE),
                "framing": "centre: 0.5 s zeros before, zeros after to a whole last window",
                "weights_file": self._file.name,
                "weights_sha256": self._sha,
                "batch_size": str(c.batch_size),
                **({"int8_calibration": f"{CALIBRATION_WINDOWS} seeded synthetic windows (seed 0)"}
                   if self._precision == "int8" else {}),
            },
        )

    # -- the verb ------------------------------------------------------------------------------
    def embed_windows(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, 48000]`` → float32 ``[B, D]`` (see ``lean_forward``)."""
        model = self._loaded()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device).unsqueeze(1)
            return lean_forward(model, x, self._dtype, self._quantised).cpu().numpy()
