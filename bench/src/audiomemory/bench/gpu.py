"""`make bench-gpu`: the whole pipeline on one accelerator, timed and checked; one JSON line.

The four model backends (separator, audio encoder, text encoder, generator) are loaded in this process with
``device`` set to ``--device`` and every ``precision`` left at ``auto`` (``runtime.precision``: float16 for the
generator's UNet and the text encoder on CUDA, float32 for htdemucs and OpenL3 there), and the orchestrator's
job code runs on them (``InProcessPipeline``: no gRPC). Models: the full-size random-weight ones
(``write_models``: htdemucs, OpenL3 music/mel256/512, CLIP ViT-L/14's text tower, SD 1.5's UNet + VAE — the
published shapes, so the real compute), or with ``--tiny`` the tiny profile's. The song is synthetic
(``song_wav``, WAV float32 44.1 kHz stereo), ``--song-seconds`` long (default 240 s: 4 minutes).

The generator as tuned for the device: SDPA attention (diffusers' ``AttnProcessor2_0``; checked on every
attention layer of the UNet and the VAE), ``--channels-last`` UNet and VAE, and ``--compile`` (``torch.compile``
of the UNet; graph breaks counted) — each on by default on CUDA, off on the CPU. Before compiling, where a
batch runs the UNet item by item (``batch_unet`` resolves to ``per_item``: CUDA), the UNet's ``ItemwiseLinear``s
are plain ``Linear``s again: outside a batched UNet call they compute exactly that, and their ``ContextVar``
breaks dynamo's graph at every one of them.

Then, in one run:

a. **the job**: ``--repeat`` timed jobs after a warm-up one (default on CUDA): seconds from the job's start to
   the end of each stage (decode, separation, embedding, text, fusion, generation), per-stage seconds, total;
b. **the VAE's NaN guard**: the UNet's dtype as ``describe()`` says and as its weights are, the VAE's weights in
   float32 (``vae_dtype``), and latents of +inf, -inf and one NaN, in the UNet's dtype, through the backend's
   decode: each must raise ``AudioMemoryError``; random latents must decode;
c. **batched painting**: ``--batch`` prompts in one ``generate_batch`` against one ``generate`` each: seconds,
   and each batch item against its image painted alone (max abs pixel difference, PSNR), after one untimed
   call of each when warming up (a compiled UNet meets the batch's shapes there). The rule: bit for bit on a
   CPU in eager mode (BENCHMARKS.md "Batched painting"); compiled or on CUDA, PSNR >= ``PSNR_FLOOR`` dB, the
   floor the project holds an image to against its reference at the same settings (issue 23). On CUDA a batch
   calls the UNet on each item's rows (``per_item``), the same input as alone, so only the kernels' choice could
   differ; compiled on a CPU (batched rows) inductor's kernels round a batch of rows otherwise than one item's
   (measured: at most 1 of 255, 86-89 dB, tiny models);
d. **devices**: every backend's ``describe().device`` must be the device asked for.

Prints one JSON line (the device's name, torch's version, each service's dtype and device, the figures, the
checks and ``ok``); exits 1 when a check fails. ``--device cpu --tiny``: seconds on a CPU (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from audiomemory.bench.common import LYRICS, cpu_model, progress, song_wav
from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.bench.models import write_models
from audiomemory.orchestrator.stages import Event
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.stack import definition
from audiomemory.v1 import orchestrator_pb2

KINDS = ("separator", "audio_encoder", "text_encoder", "generator")
#: Compiled or on CUDA, a batch item must be this close to its image painted alone (dB).
PSNR_FLOOR = 40.0
#: ``--tiny`` sizes (seconds on a CPU): song seconds, image size, steps, timed jobs.
TINY = {"song_seconds": 4.0, "size": 64, "steps": 2, "repeat": 1}
FULL = {"song_seconds": 240.0, "size": 512, "steps": 20, "repeat": 3}
Sync = Callable[[], None]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny profile's models, a short song, small image")
    parser.add_argument("--song-seconds", type=float, default=None, help="synthetic song's length (240; tiny 4)")
    parser.add_argument("--root", type=Path, default=None, help="where models go (kept; reused if written)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (20; tiny 2)")
    parser.add_argument("--size", type=int, default=None, help="image width = height (512; tiny 64)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeat", type=int, default=None, help="timed jobs (3; tiny 1)")
    parser.add_argument("--batch", type=int, default=4, help="prompts painted in one batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    on_cuda = "default: on for cuda, off for cpu"
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help=f"torch.compile the UNet ({on_cuda})")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help=f"UNet and VAE in channels_last ({on_cuda})")
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=None,
                        help=f"one untimed job first ({on_cuda})")
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cuda = args.device == "cuda"
    for key in ("compile", "channels_last", "warm_up"):
        if getattr(args, key) is None:
            setattr(args, key, cuda)
    return args


def require_device(device: str) -> tuple[str, Sync]:
    """The device's name and a function that waits for its queued work; a clear exit when CUDA is absent."""
    import torch

    if device == "cpu":
        return cpu_model(), lambda: None
    if not torch.cuda.is_available():
        raise SystemExit(f"bench-gpu: --device cuda, but this torch ({torch.__version__}, CUDA "
                         f"{torch.version.cuda or 'none'}) sees no CUDA device; install a CUDA build of torch on a "
                         f"machine with a GPU, or run --device cpu (--tiny)")
    return torch.cuda.get_device_name(0), torch.cuda.synchronize


def load_backends(args: argparse.Namespace, root: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """The four backends loaded on ``args.device``, every precision ``auto``; their configs; seconds per load."""
    overrides = write_models(root, tiny=args.tiny)
    if args.tiny:  # the tiny profile's OpenL3 is the full-size CNN: one window a second
        overrides["audio_encoder"].update(hop_seconds=1.0, hop_growth_seconds=0)
    configs, backends, load_s = {}, {}, {}
    for kind in KINDS:
        d = definition(kind)
        auto = {"precision": "auto"} if "precision" in d.config_class.model_fields else {}  # (CLIP has none)
        config = d.config_class(**{**overrides[kind], "device": args.device, **auto})
        start = time.perf_counter()
        backend = d.make_backend_class(config.backend)(config)
        backend.load()
        configs[kind], backends[kind], load_s[kind] = config, backend, round(time.perf_counter() - start, 3)
        progress(f"{kind} loaded in {load_s[kind]:.1f} s")
    return configs, backends, load_s


def image_request(backend: Any, args: argparse.Namespace, prompts: np.ndarray, negative: np.ndarray,
                  seeds: tuple[int, ...] = (), seed: int = 0) -> Any:
    from audiomemory.generator.backends import ImageRequest

    return ImageRequest(prompt_embeds=prompts, negative_prompt_embeds=negative, seed=seed, steps=args.steps,
                        guidance=args.guidance, width=args.size, height=args.size,
                        scheduler=backend.default_scheduler, seeds=seeds)


def tune_generator(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    """SDPA checked, channels_last and torch.compile applied as asked; what was found and done."""
    import torch

    from audiomemory.generator.backends.batching import ItemwiseLinear

    pipe = backend.pipeline
    attention = {name: sorted({type(p).__name__ for p in getattr(pipe, name).attn_processors.values()})
                 for name in ("unet", "vae")}
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    reverted = 0
    if args.compile:
        dim = backend.cross_attention_dim
        probe = image_request(backend, args, np.zeros((2, 1, dim), np.float32), np.zeros((1, 1, dim), np.float32),
                              seeds=(0, 1))
        if backend.batch_unet(probe) == "per_item":  # no batched UNet call: ItemwiseLinear is a Linear
            linears: list[torch.nn.Module] = [m for m in pipe.unet.modules() if type(m) is ItemwiseLinear]
            for module in linears:
                module.__class__ = torch.nn.Linear
            reverted = len(linears)
        pipe.unet.compile(backend=args.compile_backend)
    return {"attention_processors": attention, "sdpa": all(names == ["AttnProcessor2_0"]
                                                          for names in attention.values()),
            "channels_last": args.channels_last, "compile": args.compile,
            "compile_backend": args.compile_backend if args.compile else None,
            "itemwise_linears_made_plain": reverted}


def graph_breaks() -> int:
    """Graph breaks dynamo has counted in this process."""
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


def timed_job(pipeline: InProcessPipeline, song: bytes, options: dict[str, Any], sync: Sync) -> dict[str, Any]:
    """One job: its total and, from its events and the job's own marks, when each stage ended and how long."""
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def report(event: Event) -> None:
        name = orchestrator_pb2.Stage.Name(event.stage).removeprefix("STAGE_").lower()
        marks[name] = time.perf_counter() - start  # the last event of each stage

    result = pipeline.run(song, report=report, lyrics=LYRICS, **options)
    sync()
    total = time.perf_counter() - start
    if not result.png.startswith(b"\x89PNG"):
        raise RuntimeError("the pipeline returned no PNG")
    t = result.timings  # seconds from the start: decode, audio (separated, embedded, pooled), encode_text, …
    ends = {"decode": t["decode"], "separation": marks.get("separating", t["decode"]), "embedding": t["audio"],
            "text": t["encode_text"], "fusion": t["fuse"], "generation": t["generate"]}
    stage = {"decode": ends["decode"], "separation": ends["separation"] - ends["decode"],
             "embedding_after_separation": ends["embedding"] - ends["separation"],
             "front_half": ends["embedding"], "text_after_front": ends["text"] - ends["embedding"],
             "fusion": ends["fusion"] - ends["text"], "generation": ends["generation"] - ends["fusion"]}
    return {"total_s": round(total, 3), "stage_end_s": {k: round(v, 3) for k, v in ends.items()},
            "stage_s": {k: round(v, 3) for k, v in stage.items()}}


def time_jobs(pipeline: InProcessPipeline, song: bytes, args: argparse.Namespace, sync: Sync) -> dict[str, Any]:
    """(a) the warm-up job (when asked), then ``repeat`` timed ones; the fastest one's stages."""
    options = {"seed": 7, "steps": args.steps, "width": args.size, "height": args.size, "guidance": args.guidance}
    warm_up_s = None
    if args.warm_up:
        start = time.perf_counter()
        pipeline.run(song, lyrics=LYRICS, **options)  # the same shapes: compiles, tunes, pages every weight in
        sync()
        warm_up_s = round(time.perf_counter() - start, 3)
        progress(f"warm-up job {warm_up_s:.1f} s")
    runs = []
    for i in range(args.repeat):
        runs.append(timed_job(pipeline, song, options, sync))
        progress(f"job {i + 1}: {runs[-1]['total_s']:.2f} s")
    best = min(runs, key=lambda r: r["total_s"])
    return {"warm_up_s": warm_up_s, "total_s": [r["total_s"] for r in runs], "total_min_s": best["total_s"],
            "stage_s": best["stage_s"], "stage_end_s": best["stage_end_s"]}


def time_text(backend: Any, sync: Sync) -> float:
    """The lyrics and the negative prompt encoded alone, as the job does (in the job it overlaps the front half)."""
    backend.encode([LYRICS, ""])
    start = time.perf_counter()
    backend.encode([LYRICS, ""])
    sync()
    return round(time.perf_counter() - start, 4)


def check_vae(backend: Any, size: int) -> dict[str, Any]:
    """(b) the UNet's dtype, the VAE's (float32 whatever the UNet's), and the decode's guard on latents that
    overflowed (+inf, -inf) or went NaN, in the UNet's dtype as the pipeline hands them over."""
    import torch

    pipe = backend.pipeline
    info = backend.describe()
    unet_dtype = next(pipe.unet.parameters()).dtype
    vae_dtype = next(pipe.vae.parameters()).dtype
    side = size // int(pipe.vae_scale_factor)
    shape = (1, int(pipe.unet.config.in_channels), side, side)
    device = next(pipe.unet.parameters()).device
    cases: dict[str, str] = {}
    one_nan = torch.zeros(shape, dtype=unet_dtype, device=device)
    one_nan[0, 0, 0, 0] = math.nan
    for name, latents in (("+inf", torch.full(shape, math.inf, dtype=unet_dtype, device=device)),
                          ("-inf", torch.full(shape, -math.inf, dtype=unet_dtype, device=device)),
                          ("one NaN", one_nan)):
        try:
            with torch.inference_mode():
                backend._decode(pipe, latents)  # the backend's decode step (no public way to hand it latents)
            cases[name] = "decoded"
        except AudioMemoryError as exc:
            cases[name] = "raised" if "non-finite" in str(exc) else f"raised: {exc}"
    generator = torch.Generator("cpu").manual_seed(0)
    with torch.inference_mode():
        image = backend._decode(pipe, torch.randn(shape, generator=generator).to(device, unet_dtype))
    finite_ok = image.size == (size, size)
    ok = (all(v == "raised" for v in cases.values()) and finite_ok and vae_dtype == torch.float32
          and info.extra.get("vae_dtype") == "float32" and str(unet_dtype).removeprefix("torch.") == info.dtype)
    return {"ok": ok, "cases": cases, "random_latents_decode": finite_ok, "unet_dtype": info.dtype,
            "unet_weights_dtype": str(unet_dtype).removeprefix("torch."),
            "vae_dtype": info.extra.get("vae_dtype"), "vae_weights_dtype": str(vae_dtype).removeprefix("torch.")}


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR in dB of two 8-bit images; ``None`` when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def check_batch(backends: dict[str, Any], args: argparse.Namespace, sync: Sync) -> dict[str, Any]:
    """(c) ``--batch`` prompts in one batch against one by one (min over ``repeat`` rounds, in turns); each
    item against its image alone."""
    gen, lines = backends["generator"], LYRICS.splitlines()
    encoded = np.asarray(backends["text_encoder"].encode([*(lines * args.batch)[:args.batch], ""]).embeddings,
                         np.float32)
    request = image_request(gen, args, encoded[:-1], encoded[-1:], seeds=tuple(range(11, 11 + args.batch)))
    idle: Callable[..., Any] = lambda *a: None  # noqa: E731
    times: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    paint = {"batched": lambda: gen.generate_batch(request, idle, lambda: False),
             "one_by_one": lambda: [gen.generate(request.item(k), idle, lambda: False) for k in range(args.batch)]}
    images: dict[str, list[Any]] = {}
    for i in range(-1 if args.warm_up else 0, args.repeat):  # round -1: the warm-up, untimed
        for way in ("batched", "one_by_one") if i % 2 == 0 else ("one_by_one", "batched"):
            start = time.perf_counter()
            images[way] = paint[way]()
            sync()
            if i >= 0:
                times[way].append(round(time.perf_counter() - start, 3))
    batched, alone = images["batched"], images["one_by_one"]
    pairs = [(np.asarray(b.image), np.asarray(a.image)) for b, a in zip(batched, alone, strict=True)]
    diffs = [int(np.max(np.abs(b.astype(np.int16) - a.astype(np.int16)))) for b, a in pairs]
    psnrs = [psnr(b, a) for b, a in pairs]
    identical = all(d == 0 for d in diffs)
    exact = args.device == "cpu" and not args.compile
    ok = identical if exact else all(p is None or p >= PSNR_FLOOR for p in psnrs)
    return {"ok": ok, "size": args.batch, "batch_unet": gen.batch_unet(request),
            "rule": "bit for bit" if exact else f"psnr >= {PSNR_FLOOR:g} dB",
            "batched_s": times["batched"], "one_by_one_s": times["one_by_one"],
            "one_by_one_over_batched": round(min(times["one_by_one"]) / min(times["batched"]), 4),
            "identical": identical, "max_abs_diff": diffs, "psnr_db": psnrs}


def check_devices(backends: dict[str, Any], device: str) -> dict[str, Any]:
    """(d) where each backend loaded and what it computes in, as its ``describe()`` says."""
    import torch

    services = {}
    for kind, backend in backends.items():
        info = backend.describe()
        services[kind] = {"device": info.device, "dtype": info.dtype, "backend": info.backend}
    ok = all(torch.device(s["device"]).type == device for s in services.values())
    return {"ok": ok, "services": services}



def measure(args: argparse.Namespace, root: Path, sync: Sync) -> dict[str, Any]:
    """Load, tune, then (a)–(d); every figure and check."""
    import torch

    configs, backends, load_s = load_backends(args, root)
    tuned = tune_generator(backends["generator"], args)
    devices = check_devices(backends, args.device)
    pipeline = InProcessPipeline(*(backends[kind] for kind in KINDS), configs=configs)
    job = time_jobs(pipeline, song_wav(args.song_seconds), args, sync)
    text_s = time_text(backends["text_encoder"], sync)
    batch = check_batch(backends, args, sync)
    vae = check_vae(backends["generator"], args.size)
    checks = {"devices": devices["ok"], "sdpa": tuned["sdpa"], "nan_guard": vae["ok"], "batch": batch["ok"]}
    cuda = args.device == "cuda"
    return {
        **tuned, "compile_graph_breaks": graph_breaks() if args.compile else None,
        "services": devices["services"], "load_s": load_s, **job, "text_encode_alone_s": text_s,
        "batch": batch, "vae": vae,
        "cuda_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "checks": checks, "ok": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> None:
    import diffusers
    import torch

    args = parse(argv)
    device_name, sync = require_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = {"device": args.device, "device_name": device_name, "torch": torch.__version__,
              "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
              "models": "tiny profile" if args.tiny else "full-size random weights", "song_seconds": args.song_seconds,
              "song_format": "WAV float32 44.1 kHz stereo (synthetic)", "width": args.size, "height": args.size,
              "steps": args.steps, "guidance": args.guidance, "repeat": args.repeat, "warm_up": args.warm_up,
              "batch_size": args.batch, "torch_threads": torch.get_num_threads()}
    progress("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        figures = measure(args, args.root or Path(tmp) / "models", sync)
    print(json.dumps({"bench": "gpu", **params, **figures}))
    if not figures["ok"]:
        raise SystemExit(1)
