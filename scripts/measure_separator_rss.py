"""Peak RSS of a separator process on a whole song (full-size random-weight htdemucs).

    python scripts/measure_separator_rss.py SECONDS [BLOCKS]

Starts a separator in this process (the published htdemucs architecture, random weights, written to
a temporary Demucs repo), streams SECONDS of synthetic 44.1 kHz stereo float32 music-like audio to it
over loopback gRPC (generated chunk by chunk, so this client holds none of the song), asks for the
48 kHz mono float16 stems the orchestrator uses, reads the header and BLOCKS blocks (0 = all), then
prints the process's VmHWM (peak RSS). Run once per length, each in a fresh process, and compare.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.service import start_service
from audiomemory.separator.backends.demucs import HTDEMUCS_KWARGS, write_repo
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.service import DEFINITION
from audiomemory.v1 import separator_pb2, separator_pb2_grpc, tensor_pb2

RATE = 44100


def peak_rss() -> str:
    with open("/proc/self/status") as status:
        return next(line for line in status if line.startswith("VmHWM")).split(":")[1].strip()


def song(seconds: float) -> Iterator[separator_pb2.SeparateRequest]:
    yield separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions(
        output=tensor_pb2.AudioFormat(sample_rate=48000, channels=1, dtype=tensor_pb2.DTYPE_FLOAT16)))
    rng, step, total = np.random.default_rng(0), RATE * 5, int(seconds * RATE)
    for start in range(0, total, step):
        t = np.arange(start, min(total, start + step)) / RATE
        x = np.stack([0.3 * np.sin(2 * np.pi * f * t) * (1 + np.sin(np.pi * t)) for f in (110, 165)])
        x += 0.05 * rng.standard_normal(x.shape)
        for chunk in iter_audio_chunks(x.astype(np.float32), RATE):
            yield separator_pb2.SeparateRequest(audio=chunk)


def main(seconds: float, blocks: int) -> None:
    repo = Path(tempfile.mkdtemp(prefix="htdemucs-random-"))
    write_repo(repo, "htdemucs", HTDEMUCS_KWARGS)
    svc = start_service(DEFINITION, SeparatorConfig(port=0, model="htdemucs", repo=repo), wait=True, wait_timeout=300)
    print(f"loaded: VmHWM {peak_rss()}", flush=True)
    started = time.perf_counter()
    rounds = 0
    with grpc.insecure_channel(svc.address) as channel:
        call = separator_pb2_grpc.SeparatorStub(channel).Separate(song(seconds))
        for response in call:
            if response.WhichOneof("item") == "header":
                print(f"header after {time.perf_counter() - started:.1f} s: VmHWM {peak_rss()}", flush=True)
            elif response.WhichOneof("item") == "chunk" and response.chunk.stem == 0:
                rounds += 1
                if blocks and rounds >= blocks:
                    call.cancel()
                    break
    svc.stop(5)
    print(f"{seconds:g} s song, {rounds} rounds in {time.perf_counter() - started:.0f} s: VmHWM {peak_rss()}")


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
