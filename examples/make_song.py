"""Synthesise the example song: 12 s of stereo music with a sung-like lead, drums and bass.

    python examples/make_song.py examples/song.mp3

Additive synthesis in numpy, encoded with PyAV (MP3). Deterministic; the committed
examples/song.mp3 is its output.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 44100
BPM = 96


def note(freq: float, seconds: float, vibrato: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * freq * t + vibrato * np.sin(2 * np.pi * 5.5 * t)
    env = np.minimum(1, t / 0.03) * np.exp(-1.5 * t)
    return (np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)) * env


def song(seconds: float = 12.0) -> np.ndarray:
    n = int(seconds * RATE)
    beat = 60 / BPM
    rng = np.random.default_rng(7)
    lead, drums, bass = np.zeros(n), np.zeros(n), np.zeros(n)
    melody = [392.0, 440.0, 493.9, 440.0, 392.0, 329.6, 349.2, 392.0]  # the hook, twice
    bassline = [98.0, 98.0, 82.4, 87.3]
    for i in range(int(seconds / beat)):
        start = int(i * beat * RATE)
        m = note(melody[i % len(melody)], beat * 0.95, vibrato=0.4)
        lead[start : start + len(m)] += m[: n - start]
        b = note(bassline[(i // 2) % len(bassline)], beat)
        bass[start : start + len(b)] += b[: n - start]
        kick = np.sin(2 * np.pi * 55 * np.arange(4000) / RATE) * np.exp(-np.arange(4000) / 800)
        hat = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 200) * 0.3
        hit = kick if i % 2 == 0 else hat
        drums[start : start + len(hit)] += hit[: n - start]
    left = 0.35 * lead + 0.3 * drums + 0.4 * bass
    right = 0.25 * lead + 0.35 * drums + 0.4 * bass
    stereo = np.stack([left, right])
    return (0.8 * stereo / np.abs(stereo).max()).astype(np.float32)


def write_mp3(path: Path, audio: np.ndarray) -> None:
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=RATE, layout="stereo")
        frame_size = 4096
        for start in range(0, audio.shape[1], frame_size):
            block = np.ascontiguousarray(audio[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/song.mp3")
    write_mp3(out, song())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
