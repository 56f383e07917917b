"""OpenL3 speed and fidelity of faster settings against the float32 hop-0.1 reference, on real music.

For each of two songs, four excerpts stand in for the four stems. The full-size OpenL3 (random
weights, ``OpenL3Backend.write_tiny``; the spectrogram front end is the real one) embeds every stem
in float32 at hop 0.1 s (the reference) and in bfloat16 at ``--fast-hop``, through the service's
own streaming code (``backend.embed``), alternating per stem so the machine's load hits both alike.
Excerpts are ``--seconds`` long with ``seconds − 0.5`` a whole number of seconds, so the frames at
any hop that is a multiple of 0.1 s (0.2, 0.5, 1.0) are exactly every k-th reference frame: the
float32 results at those hops are read off the reference, bfloat16 at multiples of ``--fast-hop``
off the fast run.

Per candidate it prints frames/s, compute seconds per second of 4-stem audio, the pooled-vector
cosine to the reference (per stem mean and population std, concatenated), the cosine of the fused
direction û (``fusion.audio_direction`` with ``Projection.from_seed(768, 0, 4096)``) and the rule:
cos(pooled) ≥ 0.999, cos(û) ≥ 0.99 and 1 − cos(û) ≤ 0.1 × (1 − cos(û_ref(A), û_ref(B))).

    python scripts/fidelity_openl3.py SONG_A.ogg SONG_B.ogg --seconds 10.5 --fast-hop 0.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import soxr

from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.orchestrator.fusion import Projection, audio_direction, pool_stems

RATE = 48_000
STEMS = ("vocals", "drums", "bass", "other")


def excerpts(path: Path, offsets: list[float], seconds: float) -> list[np.ndarray]:
    """Mono float32 48 kHz excerpts of a recording (decoded with PyAV, channel mean, soxr)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        parts = [frame.to_ndarray().astype(np.float32) for frame in container.decode(stream)]
    audio = np.concatenate([p.reshape(stream.channels, -1) if p.shape[0] == 1 else p for p in parts], axis=1)
    mono = soxr.resample(audio.mean(axis=0), rate, RATE).astype(np.float32)
    return [mono[round(o * RATE) : round((o + seconds) * RATE)][None, :] for o in offsets]


def backend(root: Path, precision: str, hop: float, batch: int) -> OpenL3Backend:
    config = AudioEncoderConfig(precision=precision, hop_seconds=hop, hop_growth_seconds=0, batch_size=batch,
                                weights_dir=root / "openl3")
    b = OpenL3Backend(config)
    b.load()
    return b


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run(args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp())
    OpenL3Backend.write_tiny(root)
    ref_b = backend(root, "float32", 0.1, args.batch)
    fast_b = backend(root, "bfloat16", args.fast_hop, args.batch)
    offsets = [args.start + i * args.spacing for i in range(len(STEMS))]
    frames: dict[tuple[str, str], list[np.ndarray]] = {}
    seconds = {"ref": 0.0, "fast": 0.0}
    count = {"ref": 0, "fast": 0}
    for song in args.songs:
        for stem in excerpts(song, offsets, args.seconds):
            for name, b in (("ref", ref_b), ("fast", fast_b)):
                started = time.perf_counter()
                emb, _ = b.embed(stem, RATE)
                seconds[name] += time.perf_counter() - started
                count[name] += emb.shape[0]
                frames.setdefault((str(song), name), []).append(emb)
                rate = seconds[name] / count[name]
                print(f"{song.name} {name}: {emb.shape[0]} frames, {rate:.3f} s/frame so far", flush=True)
    fps = {name: count[name] / seconds[name] for name in seconds}
    if args.save is not None:
        arrays = {f"{Path(k[0]).stem}_{k[1]}_{i}": f for k, v in frames.items() for i, f in enumerate(v)}
        save: Any = np.savez  # (numpy's stub reads **arrays as its allow_pickle flag)
        save(args.save, **arrays)
    projection = Projection.from_seed(768, 0, 4096)
    report: dict[str, object] = {"fps": fps, "seconds": args.seconds, "songs": [str(s) for s in args.songs]}

    def pooled(song: Path, name: str, step: int) -> np.ndarray:
        return pool_stems({s: f[::step] for s, f in zip(STEMS, frames[(str(song), name)], strict=True)})

    u_ref = {s: audio_direction(pooled(s, "ref", 1), projection) for s in args.songs}
    between = 1 - cos(*(u_ref[s] for s in args.songs))  # type: ignore[arg-type]
    report["between_songs_1_minus_cos"] = between
    candidates = [("float32", k / 10, "ref", k) for k in (2, 4, 5, 10)]
    candidates += [("bfloat16", args.fast_hop * m, "fast", m) for m in args.fast_multiples]
    ref_cost = 4 * 10 / fps["ref"]  # compute seconds per audio second, 4 stems at 10 frames/s
    for precision, hop, name, step in candidates:
        per_song = []
        for song in args.songs:
            p_ref, p = pooled(song, "ref", 1), pooled(song, name, step)
            u = audio_direction(p, projection)
            per_song.append((cos(p_ref, p), cos(u_ref[song], u)))  # type: ignore[arg-type]
        pooled_cos = min(c for c, _ in per_song)
        u_cos = min(c for _, c in per_song)
        cost = 4 * (1 / hop) / fps[name]
        report[f"{precision} hop {hop:g}"] = {
            "pooled_cos_min": pooled_cos, "u_cos_min": u_cos, "compute_s_per_audio_s": cost,
            "speedup": ref_cost / cost,
            "passes": pooled_cos >= 0.999 and u_cos >= 0.99 and 1 - u_cos <= 0.1 * between,
        }
    report["float32 hop 0.1 compute_s_per_audio_s"] = ref_cost
    step = round(args.fast_hop * 10)
    frame_cos = [
        float(np.min(np.sum(r[::step] * f, 1) / (np.linalg.norm(r[::step], axis=1) * np.linalg.norm(f, axis=1))))
        for s in args.songs
        for r, f in zip(frames[(str(s), "ref")], frames[(str(s), "fast")], strict=True)
    ]
    report["bf16_vs_fp32_per_frame_cos_min"] = min(frame_cos)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("songs", nargs=2, type=Path, help="two recordings (any format PyAV decodes)")
    parser.add_argument("--seconds", type=float, default=10.5, help="excerpt length; seconds − 0.5 whole")
    parser.add_argument("--start", type=float, default=20.0, help="first excerpt's offset, seconds")
    parser.add_argument("--spacing", type=float, default=40.0, help="seconds between excerpt starts")
    parser.add_argument("--fast-hop", type=float, default=0.5, help="bfloat16 hop (a multiple of 0.1)")
    parser.add_argument("--fast-multiples", type=int, nargs="+", default=[1, 2, 5],
                        help="also report bfloat16 at these multiples of --fast-hop (every k-th fast frame)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--save", type=Path, default=None, help="write every stem's frames to this .npz")
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
