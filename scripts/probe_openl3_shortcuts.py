"""Two ways to make OpenL3 cheaper than one CNN pass per window, measured against the fidelity rule.

Issue 11 asked for OpenL3 "several times faster at an equal result" and named two candidates beyond
bf16 and the hop; this script measures both on real music, against the float32 hop-0.1 reference
computed by the service's own code (``OpenL3Backend.embed``), with the rule of docs/DESIGN.md §9
(pooled cosine ≥ 0.999, û cosine ≥ 0.99, 1 − cos(û) ≤ 0.1 × the between-songs 1 − cos):

- **shared trunk**: the spectrogram and the CNN computed once over the whole excerpt, then each
  window's embedding as the max over its 24 columns of the last feature map (each spectrogram
  column through the CNN once instead of ten times at hop 0.1). The per-window max normalisation
  becomes a sliding max (the window centred on each column). It also reports where each window's
  max comes from: the CNN zero-pads every window at its edges, and the edge columns carry most
  channels' maxima — which no shared computation reproduces.
- **int8**: the CNN statically quantised for x86 (the service's ``quantise_int8``: PyTorch FX,
  per-channel weights, min-max activation ranges), calibrated on a third song; its speed at batch
  16 next to float32 and bf16 on the same spectrograms, and its frames at hop 0.1 and 0.2 (every
  other frame) against the rule.

Four excerpts of each song stand in for the four stems (as ``fidelity_openl3.py``); the model is the
full-size OpenL3 with random weights (``OpenL3Backend.write_tiny``).

    python scripts/probe_openl3_shortcuts.py A.ogg B.ogg CALIBRATION.ogg
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiomemory.audio_encoder.backends.int8 import quantise_int8
from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend, cnn_layers, window_spectrograms
from audiomemory.orchestrator.fusion import Projection, audio_direction, pool_stems

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_openl3 import RATE, STEMS, backend, cos, excerpts  # a sibling script

HOP = 4800  # 0.1 s at 48 kHz: the reference hop


def windows(signal: np.ndarray) -> np.ndarray:
    """The service's framing at hop 0.1 (0.5 s of zeros before, whole last window): ``[T, 48000]``."""
    count = 1 + int(np.ceil(max(0, signal.size + RATE // 2 - RATE) / HOP))
    padded = np.zeros((count - 1) * HOP + RATE, np.float32)
    padded[RATE // 2 : RATE // 2 + signal.size] = signal
    return np.stack([padded[i * HOP : i * HOP + RATE] for i in range(count)])


def shared_trunk(model: Any, cnn: nn.Module, signal: np.ndarray) -> tuple[np.ndarray, float]:
    """Frames at hop 0.1 from one CNN pass over the whole excerpt, and the share of maxima at window edges."""
    layer, count = model.speclayer, windows(signal).shape[0]
    padded = np.zeros(982 + RATE // 2 + (count - 1) * HOP + RATE + 2048, np.float32)  # kapre's 982-sample pad
    padded[982 + RATE // 2 : 982 + RATE // 2 + signal.size] = signal
    stft = torch.stft(torch.from_numpy(padded), n_fft=2048, hop_length=242,
                      window=torch.hann_window(2048, periodic=True), center=False, return_complex=True)
    mel = torch.sqrt(layer.mel_basis @ (stft.real.square() + stft.imag.square()))
    decibel = 10 * torch.log10(torch.clamp(mel, min=1e-10))
    reference = F.max_pool1d(decibel.amax(0)[None, None], 199, stride=1, padding=99)[0, 0, : decibel.shape[1]]
    features = cnn(torch.clamp(decibel - reference, min=-80.0)[None, None])[0].amax(1)  # [512, columns]
    starts = [round(i * HOP / 242 / 8) for i in range(count)]
    frames = torch.stack([features[:, c : c + 24].amax(1) for c in starts]).numpy()
    # Where a window's own (zero-padded) CNN puts each channel's max: the 3 columns at either edge?
    last = cnn(window_spectrograms(model, windows(signal)[count // 2 : count // 2 + 8]))[..., :24].amax(2)
    column = last.argmax(-1)
    return frames, float(((column < 3) | (column >= 21)).float().mean())


def embed(cnn: Callable[[torch.Tensor], torch.Tensor], model: Any, signal: np.ndarray) -> np.ndarray:
    """Frames at hop 0.1 through ``cnn`` (per window, as the service), max-pooled to ``[T, 512]``."""
    batch = windows(signal)
    out = [cnn(window_spectrograms(model, batch[i : i + 16])).amax((2, 3)) for i in range(0, batch.shape[0], 16)]
    return torch.cat(out).numpy()


def throughput(cnn: Callable[[torch.Tensor], torch.Tensor], specs: torch.Tensor) -> float:
    """Windows per second through ``cnn`` at batch 16 (best of two passes over ``specs``)."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for i in range(0, specs.shape[0], 16):
            cnn(specs[i : i + 16])
        best = min(best, time.perf_counter() - started)
    return specs.shape[0] / best


def rule(frames: dict[str, dict[str, list[np.ndarray]]], name: str, step: int) -> dict[str, Any]:
    """The fidelity rule for ``frames[name]`` (every ``step``-th frame) against ``frames["reference"]``."""
    projection = Projection.from_seed(768, 0, 4096)

    def pooled(which: str, song: str, k: int) -> np.ndarray:
        return pool_stems({s: f[::k] for s, f in zip(STEMS, frames[which][song], strict=True)})

    songs = list(frames["reference"])
    u_ref = {s: audio_direction(pooled("reference", s, 1), projection) for s in songs}
    allowed = 0.1 * (1 - cos(*u_ref.values()))
    pooled_cos = min(cos(pooled("reference", s, 1), pooled(name, s, step)) for s in songs)
    error = max(1 - cos(u_ref[s], audio_direction(pooled(name, s, step), projection)) for s in songs)
    met = pooled_cos >= 0.999 and error <= allowed
    return {"pooled_cos": round(pooled_cos, 6), "direction_error": float(f"{error:.3g}"),
            "allowed": float(f"{allowed:.3g}"), "rule_met": met}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp())
    OpenL3Backend.write_tiny(root)
    service = backend(root, "float32", 0.1, 16)
    model = service._loaded()
    cnn = cnn_layers(model)
    offsets = [args.start + i * args.spacing for i in range(len(STEMS))]
    calibration = np.concatenate([windows(x[0])[::6] for x in excerpts(args.calibration, offsets, args.seconds)])
    with torch.inference_mode():
        quantised = quantise_int8(cnn, window_spectrograms(model, calibration))
    frames: dict[str, dict[str, list[np.ndarray]]] = {"reference": {}, "trunk": {}, "int8": {}}
    edge_share = []
    for song in args.songs:
        for stem in excerpts(song, offsets, args.seconds):
            frames["reference"].setdefault(song.name, []).append(service.embed(stem, RATE)[0])
            with torch.inference_mode():
                trunk, share = shared_trunk(model, cnn, stem[0])
                frames["trunk"].setdefault(song.name, []).append(trunk)
                frames["int8"].setdefault(song.name, []).append(embed(quantised, model, stem[0]))
            edge_share.append(share)
            print(f"{song.name}: stem {len(frames['int8'][song.name])} done", flush=True)
    with torch.inference_mode():
        specs = window_spectrograms(model, calibration[:64])

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cnn(x)

        speed = {k: round(throughput(f, specs), 2) for k, f in (("float32", cnn), ("bfloat16", bf16),
                                                                 ("int8", quantised))}
    return {
        "songs": [s.name for s in args.songs], "calibration": args.calibration.name, "seconds": args.seconds,
        "cnn_windows_per_s_batch_16": speed,
        "share_of_window_maxima_in_the_3_edge_columns_each_side": round(float(np.mean(edge_share)), 3),
        "shared_trunk_hop_0.1": rule(frames, "trunk", 1),
        "int8_hop_0.1": rule(frames, "int8", 1), "int8_hop_0.2": rule(frames, "int8", 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("songs", nargs=2, type=Path, help="two recordings (any format PyAV decodes)")
    parser.add_argument("calibration", type=Path, help="a third recording, for int8 calibration")
    parser.add_argument("--seconds", type=float, default=10.5, help="excerpt length (seconds)")
    parser.add_argument("--start", type=float, default=20.0, help="first excerpt's offset, seconds")
    parser.add_argument("--spacing", type=float, default=40.0, help="seconds between excerpt starts")
    warnings.simplefilter("ignore")  # torch.ao's deprecation notes, librosa's empty mel bands
    torch.set_num_threads(2)
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
