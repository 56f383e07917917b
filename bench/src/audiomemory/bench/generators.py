"""The generator's backends against each other on full-size random-weight SD 1.5 (same compute as the real one).

For each backend and precision that ``auto`` gives on this machine — ``stable-diffusion`` (diffusers, eager) in
float32 (the reference) and in its ``auto`` precision where that differs, ``openvino`` in its ``auto`` precision —
one image at the same settings (``--size``, ``--steps``, the model's PNDM, guidance 7.5, one seed, seeded random
prompt embeddings), after a one-step warm-up at that size:

- seconds per denoising step (median gap between step events) and for the whole call (steps + VAE + image);
- the image's PSNR against the eager float32 image (the fidelity rule: >= 40 dB);
- for ``openvino``, its start-up: a *first start* on an empty compiled-model cache (load, trace + convert to IR,
  compile) and a *warm start* on the cache the first start left (IR read, compiled blob imported), each in a
  fresh process, with that process's peak RSS.

Prints a table and, last, one JSON line. ``--tiny``: the tiny profile's model, both starts in this process (a quick
check of this script).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiomemory.bench.common import cpu_model, progress
from audiomemory.bench.models import write_models
from audiomemory.bench.vision import step_seconds
from audiomemory.generator.backends import GenerationStopped, ImageRequest
from audiomemory.generator.backends.openvino import openvino_precision
from audiomemory.generator.backends.stable_diffusion import compute_dtype
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.registry import load_backend

#: What a fresh process runs: one openvino start (``start_once``), its figures as one JSON line.
START_SCRIPT = "import json, sys; from audiomemory.bench.generators import start_once; print(json.dumps(start_once(" \
    "json.loads(sys.argv[1]))))"


def start_once(settings: dict[str, Any]) -> dict[str, Any]:
    """Load the openvino backend with ``settings``: load, convert and compile seconds, this process's peak RSS."""
    from audiomemory.generator.backends.openvino import OpenVINOBackend

    backend = OpenVINOBackend(GeneratorConfig(**settings))
    backend.load()
    assert backend._unets is not None
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    return {"load_s": round(backend.load_seconds, 2), **{k: round(v, 2) for k, v in backend._unets.timings.items()},
            "peak_rss_mb": round(peak)}


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(((image.astype(np.float64) - reference.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)


def paint(backend: Any, request: ImageRequest) -> dict[str, Any]:
    """A one-step warm-up at this size (stopped before the decode), then the timed image."""
    warm: list[int] = []
    with contextlib.suppress(GenerationStopped):
        backend.generate(request, lambda step, total: warm.append(step), lambda: bool(warm))
    stamps: list[float] = []
    start = time.perf_counter()
    image = backend.generate(request, lambda step, total: stamps.append(time.perf_counter()), lambda: False).image
    return {"call_s": round(time.perf_counter() - start, 2), "step_s": round(step_seconds(stamps), 3),
            "image": np.asarray(image.convert("RGB"))}


def start_times(settings: dict[str, Any], cache: Path, fresh: bool = True) -> dict[str, dict[str, Any]]:
    """The openvino backend started twice in fresh processes (``fresh``; else in this one, for ``--tiny``'s quick
    check): on an emptied cache, then on what it left. ``start_s``: the whole start, the interpreter's included."""
    shutil.rmtree(cache, ignore_errors=True)
    out = {}
    for name in ("first_start", "warm_start"):
        progress(f"openvino {name.replace('_', ' ')} ({'a fresh process' if fresh else 'this process'})")
        given = {**settings, "backend": "openvino", "compiled_cache": str(cache)}
        began = time.perf_counter()
        if fresh:
            done = subprocess.run([sys.executable, "-c", START_SCRIPT, json.dumps(given)], capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"openvino {name} failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            figures = start_once(given)
        out[name] = {"start_s": round(time.perf_counter() - began, 2), **figures}
    return out


def variants(flags: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(backend, precision) pairs to run: the eager float32 reference, then each backend's ``auto`` (deduplicated)."""
    eager_auto = str(compute_dtype("auto", "cpu", flags)).removeprefix("torch.")
    chosen = [("stable-diffusion", "float32"), ("stable-diffusion", eager_auto),
              ("openvino", openvino_precision("auto", flags))]
    return list(dict.fromkeys(chosen))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="where the full-size random models are (written if absent)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (PNDM: one UNet call more)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="the tiny profile's model (a check of this script)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="audiomemory-bench-generators-"))
    root = args.root or work / "models"
    settings = {"device": "cpu", "default_size": args.size, **write_models(root, tiny=args.tiny)["generator"]}
    if args.threads:
        settings["torch_threads"] = args.threads
    starts = start_times(settings, work / "compiled", fresh=not args.tiny)
    dim = 32 if args.tiny else 768
    rng = np.random.default_rng(0)
    request = ImageRequest(prompt_embeds=rng.standard_normal((1, 77, dim)).astype(np.float32),
                           negative_prompt_embeds=np.zeros((1, 77, dim), np.float32), seed=7, steps=args.steps,
                           guidance=7.5, width=args.size, height=args.size, scheduler="")
    rows: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for backend_name, precision in variants():
        name = f"{backend_name} {precision}"
        progress(f"{name}: {args.size}², {args.steps} steps")
        config = GeneratorConfig(**{**settings, "backend": backend_name, "precision": precision,
                                    "compiled_cache": str(work / "compiled")})
        backend = load_backend("generator", backend_name)(config)
        start = time.perf_counter()
        backend.load()
        row = {"load_s": round(time.perf_counter() - start, 2), **paint(backend, request)}
        image = row.pop("image")
        reference = image if reference is None else reference
        row["psnr_db_vs_eager_float32"] = psnr(image, reference)
        rows[name] = row
        del backend
        gc.collect()
    report(rows, starts, args)
    shutil.rmtree(work, ignore_errors=True)


def report(rows: dict[str, dict[str, Any]], starts: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{'backend':<28}{'s/step':>9}{'call s':>9}{'PSNR dB':>9}")
    for name, row in rows.items():
        print(f"{name:<28}{row['step_s']:>9}{row['call_s']:>9}{row['psnr_db_vs_eager_float32']:>9}")
    for name, start in starts.items():
        print(f"openvino {name}: {start}")
    eager = rows["stable-diffusion float32"]["step_s"]
    summary = {
        "cpu": cpu_model(), "torch": torch.__version__, "size": args.size, "steps": args.steps, "tiny": args.tiny,
        "backends": rows, "openvino_start": starts,
        "step_speedup_vs_eager_float32": {name: round(eager / row["step_s"], 3) for name, row in rows.items()},
    }
    print(json.dumps(summary))
