"""Benchmark the audio services on full-size random-weight models (same compute as the real ones).

Writes, under a temporary folder, the published htdemucs architecture (HTDemucs, 42.0 M
parameters, 7.8 s segments) as a Demucs local repo and OpenL3 music/mel256/512 weights in the
torch hub-cache layout, all random weights, and loads them through the services' normal loading
code. Then measures, in one run on one machine:

- Demucs on 10 s of 44.1 kHz stereo: in-process (``backend.separate``) vs through the separator
  service (``Separate`` over loopback gRPC, native 44.1 kHz stereo float32 stems back, and the
  48 kHz mono float16 stems the orchestrator asks for), and the ratio service / in-process;
- OpenL3 frames per second at batch sizes 1, 32 and 128 (``backend.embed`` on audio that makes
  ``--frames`` frames at hop 0.1 s), and through the audio encoder service at the default batch.

- peak memory growth of one OpenL3 forward at batch ``--memory`` (32): torchopenl3's own forward
  vs ``lean_forward`` (same layers), each in a fresh process.

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from audiomemory import profiles
from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.service import DEFINITION as AUDIO_ENCODER
from audiomemory.bench.common import cpu_model, progress
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.runtime.audio import AudioAssembler, iter_audio_chunks
from audiomemory.runtime.service import start_service
from audiomemory.separator.backends.demucs import HTDEMUCS_KWARGS, DemucsBackend, write_repo
from audiomemory.separator.backends.openvino import OpenVINODemucsBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.service import DEFINITION as SEPARATOR
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, separator_pb2, separator_pb2_grpc, tensor_pb2


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn`` (after the caller's warm-up)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def music(rate: int, channels: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(0)
    rows = [
        0.3 * np.sin(2 * np.pi * 110 * (c + 1) * t) * (1 + np.sin(2 * np.pi * 2 * t))
        + 0.05 * rng.standard_normal(t.shape)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def separate_over_grpc(stub: separator_pb2_grpc.SeparatorStub, audio: np.ndarray, rate: int,
                       fmt: tensor_pb2.AudioFormat | None) -> int:
    def stream() -> Any:
        if fmt is not None:
            yield separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions(output=fmt))
        for chunk in iter_audio_chunks(audio, rate):
            yield separator_pb2.SeparateRequest(audio=chunk)

    received = 0
    assemblers: dict[int, AudioAssembler] = {}
    for response in stub.Separate(stream(), timeout=600):
        if response.WhichOneof("item") == "chunk":
            chunk = response.chunk
            assembler = assemblers.setdefault(chunk.stem, AudioAssembler("stem", max_frames=1 << 40, max_bytes=1 << 40))
            assembler.add(chunk.audio)
            received += len(chunk.audio.samples.data)
    for assembler in assemblers.values():
        assembler.result()  # decode like a real client would
    return received


def bench_demucs(root: Path, seconds: float, repeat: int, device: str, tiny: bool = False) -> dict[str, Any]:
    if tiny:
        overrides = profiles.write_tiny_for("separator", root / "demucs")
    else:
        overrides = write_repo(root / "demucs", "htdemucs_random", HTDEMUCS_KWARGS)
    config = SeparatorConfig(port=0, device=device, **overrides)
    backend = DemucsBackend(config)
    backend.load()
    params = sum(p.numel() for p in backend._loaded().parameters())
    audio = music(44100, 2, seconds)
    backend.separate(audio, 44100)  # warm-up
    for_encoder = tensor_pb2.AudioFormat(sample_rate=48000, channels=1, dtype=tensor_pb2.DTYPE_FLOAT16)
    svc = start_service(SEPARATOR, config, backend, wait=True)  # the same loaded model behind gRPC
    times: dict[str, list[float]] = {"in_process": [], "native": [], "asked": []}
    try:
        with grpc.insecure_channel(svc.address) as channel:
            stub = separator_pb2_grpc.SeparatorStub(channel)
            native_bytes = separate_over_grpc(stub, audio, 44100, None)
            encoder_bytes = separate_over_grpc(stub, audio, 44100, for_encoder)
            # Interleaved, so a change in the machine's load hits all three alike.
            for i in range(repeat):
                progress(f"demucs round {i + 1}/{repeat}")
                times["in_process"].append(timed(lambda: backend.separate(audio, 44100), 1))
                times["native"].append(timed(lambda: separate_over_grpc(stub, audio, 44100, None), 1))
                times["asked"].append(timed(lambda: separate_over_grpc(stub, audio, 44100, for_encoder), 1))
    finally:
        svc.stop(0)
    in_process, native, asked = (statistics.median(times[k]) for k in ("in_process", "native", "asked"))
    return {
        "demucs_params_m": round(params / 1e6, 2),
        "demucs_audio_s": seconds,
        "demucs_in_process_s": round(in_process, 3),
        "demucs_service_native_s": round(native, 3),
        "demucs_service_native_mb": round(native_bytes / 1e6, 1),
        "demucs_service_48k_mono_f16_s": round(asked, 3),
        "demucs_service_48k_mono_f16_mb": round(encoder_bytes / 1e6, 1),
        "demucs_ratio_native": round(native / in_process, 3),
        "demucs_ratio_48k_mono_f16": round(asked / in_process, 3),
        **bench_demucs_openvino(backend, config, audio, repeat, root / "openvino"),
    }


def bench_demucs_openvino(eager: DemucsBackend, config: SeparatorConfig, audio: np.ndarray, repeat: int,
                          cache: Path) -> dict[str, Any]:
    """The ``openvino`` separator against the eager one, in process, interleaved: its first load (convert +
    compile into an empty cache), a warm load (a second backend on what the first left), the time, the stems'
    SNR against eager float32."""
    settings = config.model_copy(update={"backend": "openvino", "compiled_cache": str(cache)})
    started = time.perf_counter()
    OpenVINODemucsBackend(settings).load()
    first = time.perf_counter() - started
    started = time.perf_counter()
    compiled = OpenVINODemucsBackend(settings)
    compiled.load()
    warm = time.perf_counter() - started
    reference, stems = eager.separate(audio, 44100).audio, compiled.separate(audio, 44100).audio  # and a warm-up
    error = float(((stems.astype(np.float64) - reference) ** 2).sum())
    snr = 10 * np.log10(float((reference.astype(np.float64) ** 2).sum()) / max(error, 1e-30))
    times: dict[str, list[float]] = {"eager": [], "openvino": []}
    for i in range(repeat):
        progress(f"demucs eager vs openvino, round {i + 1}/{repeat}")
        times["eager"].append(timed(lambda: eager.separate(audio, 44100), 1))
        times["openvino"].append(timed(lambda: compiled.separate(audio, 44100), 1))
    eager_s, openvino_s = statistics.median(times["eager"]), statistics.median(times["openvino"])
    return {
        "demucs_openvino_s": round(openvino_s, 3),
        "demucs_openvino_eager_s": round(eager_s, 3),
        "demucs_openvino_speedup": round(eager_s / openvino_s, 3),
        "demucs_openvino_snr_db": round(snr, 1),
        "demucs_openvino_first_load_s": round(first, 2),
        "demucs_openvino_warm_load_s": round(warm, 2),
    }


def embed_over_grpc(stub: audio_encoder_pb2_grpc.AudioEncoderStub, audio: np.ndarray, rate: int) -> int:
    chunks = (audio_encoder_pb2.EmbedRequest(audio=c) for c in iter_audio_chunks(audio, rate))
    frames = 0
    for response in stub.Embed(chunks, timeout=600):
        if response.WhichOneof("item") == "frames":
            frames += int(response.frames.embeddings.shape[0])
    return frames


def bench_openl3(root: Path, frames: int, batches: list[int], device: str) -> dict[str, Any]:
    overrides = OpenL3Backend.write_tiny(root, input_repr="mel256")  # the default profile's architecture
    # Audio that makes exactly `frames` frames at hop 0.1 s (4800 samples): (frames − 1)·hop + 0.5 s.
    audio = music(48000, 1, ((frames - 1) * 4800 + 24000) / 48000)
    out: dict[str, Any] = {"openl3_frames": frames}
    backend = OpenL3Backend(AudioEncoderConfig(device=device, hop_seconds=0.1, **overrides))
    backend.load()
    backend.embed(audio[:, :24000], 48000)  # warm-up (one frame)
    for batch in batches:
        progress(f"openl3 batch {batch}")
        backend.config = backend.config.model_copy(update={"batch_size": batch})
        start = time.perf_counter()
        embeddings, _ = backend.embed(audio, 48000)
        elapsed = time.perf_counter() - start
        assert embeddings.shape[0] == frames
        out[f"openl3_fps_batch{batch}"] = round(frames / elapsed, 3)
    config = AudioEncoderConfig(port=0, device=device, hop_seconds=0.1, **overrides)
    backend.config = config
    svc = start_service(AUDIO_ENCODER, config, backend, wait=True)
    try:
        with grpc.insecure_channel(svc.address) as channel:
            stub = audio_encoder_pb2_grpc.AudioEncoderStub(channel)
            start = time.perf_counter()
            assert embed_over_grpc(stub, audio, 48000) == frames
            out["openl3_fps_service_batch32"] = round(frames / (time.perf_counter() - start), 3)
    finally:
        svc.stop(0)
    return out


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the parent's
    high-water mark across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6  # kB → GB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def forward_memory(which: str, batch: int) -> float:
    """GB the process's peak RSS grows by during one OpenL3 forward of ``batch`` frames (run in a fresh
    process, so earlier work does not hide it)."""
    from audiomemory.audio_encoder.backends.openl3 import lean_forward

    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        weights = OpenL3Backend.write_tiny(Path(tmp), input_repr="mel256")
        backend = OpenL3Backend(AudioEncoderConfig(device="cpu", **weights))
        backend.load()
    model = backend._loaded()
    x = torch.randn(batch, 1, 48000) * 0.1
    before = peak_rss_gb()
    with torch.inference_mode():
        model(x) if which == "torchopenl3" else lean_forward(model, x)
    return peak_rss_gb() - before


def bench_memory(batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in ("torchopenl3", "lean"):
        progress(f"openl3 forward memory, {which}, batch {batch}")
        run = subprocess.run(
            [sys.executable, "-m", "audiomemory.bench.audio", "--memory-probe", which, str(batch)],
            capture_output=True, text=True, check=True,
        )
        out[f"openl3_rss_growth_gb_batch{batch}_{which}"] = round(float(run.stdout.strip().splitlines()[-1]), 2)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio separated by Demucs")
    parser.add_argument("--repeat", type=int, default=2, help="timed Demucs runs per figure (median)")
    parser.add_argument("--frames", type=int, default=128, help="OpenL3 frames per measurement")
    parser.add_argument("--batches", default="1,32,128", help="OpenL3 batch sizes")
    parser.add_argument("--device", default="cpu", help="cpu (the figures asked for), cuda, auto")
    parser.add_argument("--skip-demucs", action="store_true")
    parser.add_argument("--skip-openl3", action="store_true")
    parser.add_argument("--memory", type=int, metavar="BATCH", default=32,
                        help="measure one OpenL3 forward's memory, torchopenl3's vs ours, at this batch (0 = skip)")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny profile's separator (a quick check of this script; OpenL3 is full-size anyway)")
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(forward_memory(args.memory_probe[0], int(args.memory_probe[1])))
        return

    result: dict[str, Any] = {
        "load_avg_start": round(os.getloadavg()[0], 2),
        "bench": "audio",
        "models": "tiny separator" if args.tiny else "full-size random weights",
        "machine": cpu_model(),
        "allocator": heap_allocator(),
        "cpus": torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        if not args.skip_demucs:
            result.update(bench_demucs(Path(tmp), args.seconds, args.repeat, args.device, args.tiny))
        if not args.skip_openl3:
            result.update(bench_openl3(Path(tmp), args.frames, [int(b) for b in args.batches.split(",")], args.device))
        if args.memory:
            result.update(bench_memory(args.memory))
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    for key, value in result.items():
        print(f"{key:34} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
