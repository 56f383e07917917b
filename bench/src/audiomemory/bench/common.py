"""What the benchmarks share: naming the machine, printing progress, the synthetic song and its lyrics."""

from __future__ import annotations

import io
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import soundfile as sf

LYRICS = """neon rain on the window, we were young
hold the light, hold the light
the city hums a song we never sung
hold the light, hold the light"""


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (figures in BENCHMARKS.md name their machine)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def progress(message: str) -> None:
    """A timestamped line on stderr, so stdout keeps only the table and the final JSON."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def song_wav(seconds: float, rate: int = 44100) -> bytes:
    """A synthetic stereo 'song': a bass line, a chord pad, a noise-burst beat; WAV float32 bytes."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(0)
    bass = 0.25 * np.sin(2 * np.pi * 55 * t * (1 + (np.floor(t * 2) % 4) / 8))
    pad = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    beat = 0.3 * rng.standard_normal(t.shape) * np.exp(-30 * ((t * 2) % 1))
    left = bass + pad + beat
    right = bass + 0.8 * pad + beat * 0.9
    audio = np.stack([left, right], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()
