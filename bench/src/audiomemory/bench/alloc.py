"""Benchmark the heap allocator under a model call: glibc malloc vs tcmalloc, main vs worker thread.

Two worker processes, one started plainly (glibc malloc) and one with ``LD_PRELOAD`` naming
tcmalloc, each build SD 1.5's UNet (published shape, random weights, seed 0) and wait. The parent
then asks them in turn, ``--repeat`` rounds with the order alternating, to time ``--steps`` UNet
calls (batch 2 as under classifier-free guidance, ``--size``² image, 2 torch threads) on their main
thread and the same on a fresh thread, as a service's worker thread runs them. Each answer carries
the wall seconds, the minor page faults and the system CPU seconds of that measurement. Ratios are
of minimums measured in this one run; the last line is one JSON object.

    make bench-alloc                  # or: .venv/bin/python scripts/bench_alloc.py --steps 3 --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

from audiomemory.bench.common import cpu_model, progress
from audiomemory.runtime.allocator import find_tcmalloc


def worker(size: int, steps: int, tiny: bool) -> None:
    """Build the UNet, then answer each ``go`` line on stdin with one JSON line of measurements."""
    import torch

    from audiomemory.bench.models import sd15_unet
    from audiomemory.runtime.allocator import heap_allocator

    torch.manual_seed(0)
    unet = sd15_unet(tiny=tiny).eval()
    latent = size // 8
    x, t, text = torch.randn(2, 4, latent, latent), torch.tensor(10), torch.randn(2, 77, 768)

    def run() -> None:
        with torch.no_grad():
            for _ in range(steps):
                unet(x, t, encoder_hidden_states=text)

    def measured(where: str) -> dict[str, float]:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        if where == "main":
            run()
        else:
            thread = threading.Thread(target=run, name="bench-worker")
            thread.start()
            thread.join()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {"step_s": wall / steps, "minflt_per_step": (after.ru_minflt - before.ru_minflt) / steps,
                "sys_s_per_step": (after.ru_stime - before.ru_stime) / steps}

    run()  # warm-up: pages the weights in, starts the thread pools
    print(json.dumps({"ready": heap_allocator()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        print(json.dumps({"main": measured("main"), "thread": measured("thread")}), flush=True)


def rounds(args: argparse.Namespace, tcmalloc: str) -> dict[str, list[dict[str, Any]]]:
    """Start the two workers (glibc, tcmalloc preloaded), then ``--repeat`` rounds, the order alternating."""
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    cmd = [sys.executable, "-m", "audiomemory.bench.alloc", "--worker", "--size", str(args.size),
           "--steps", str(args.steps), *(["--tiny"] if args.tiny else [])]
    procs = {
        "glibc": subprocess.Popen(cmd, env=base, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
        "tcmalloc": subprocess.Popen(cmd, env={**base, "LD_PRELOAD": str(tcmalloc)}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True),
    }
    try:
        for name, proc in procs.items():
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())["ready"]
            if ready != name:
                sys.exit(f"the {name} worker runs on {ready}")
        progress("both workers built the UNet")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in procs}
        for i in range(args.repeat):
            order = list(procs) if i % 2 == 0 else list(procs)[::-1]  # neither side always goes first
            for name in order:
                proc = procs[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                results[name].append(json.loads(proc.stdout.readline()))
                r = results[name][-1]
                progress(f"round {i + 1}: {name}: main {r['main']['step_s']:.2f} s/step, "
                         f"thread {r['thread']['step_s']:.2f} s/step")
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(60)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image width = height (latent = size/8)")
    parser.add_argument("--steps", type=int, default=3, help="UNet calls per measurement")
    parser.add_argument("--repeat", type=int, default=4, help="measurements per process (min and all printed)")
    parser.add_argument("--tcmalloc", default=None, help="path of libtcmalloc_minimal.so.4 (default: found)")
    parser.add_argument("--tiny", action="store_true", help="a tiny UNet (a quick check of this script)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.size, args.steps, args.tiny)
        return
    tcmalloc = args.tcmalloc or find_tcmalloc()
    if not tcmalloc:
        sys.exit("tcmalloc not found: install libtcmalloc-minimal4 (Debian/Ubuntu) or pass --tcmalloc PATH")

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"parameters: {'a tiny' if args.tiny else 'SD 1.5'} UNet (random weights), batch 2, {args.size}x{args.size}, "
          f"{args.steps} calls per measurement, {args.repeat} rounds, tcmalloc {tcmalloc}", flush=True)
    results = rounds(args, str(tcmalloc))
    procs = list(results)

    def best(name: str, where: str, key: str) -> float:
        return min(r[where][key] for r in results[name])

    print(f"\n{'per UNet call':28} {'main s':>8} {'thread s':>9} {'faults (main)':>14} {'sys s (main)':>13}")
    for name in procs:
        print(f"{name:28} {best(name, 'main', 'step_s'):8.3f} {best(name, 'thread', 'step_s'):9.3f} "
              f"{best(name, 'main', 'minflt_per_step'):14.0f} {best(name, 'main', 'sys_s_per_step'):13.3f}")
    summary = {
        "bench": "alloc",
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "models": "tiny UNet" if args.tiny else "SD 1.5 UNet",
        "size": args.size,
        "steps": args.steps,
        "repeat": args.repeat,
        "statistic": "min over rounds",
        "tcmalloc_over_glibc_main": round(best("tcmalloc", "main", "step_s") / best("glibc", "main", "step_s"), 4),
        "tcmalloc_over_glibc_thread": round(
            best("tcmalloc", "thread", "step_s") / best("glibc", "thread", "step_s"), 4),
        "thread_over_main_glibc": round(best("glibc", "thread", "step_s") / best("glibc", "main", "step_s"), 4),
        "thread_over_main_tcmalloc": round(
            best("tcmalloc", "thread", "step_s") / best("tcmalloc", "main", "step_s"), 4),
        "minflt_per_call": {n: {w: round(best(n, w, "minflt_per_step")) for w in ("main", "thread")} for n in procs},
        "sys_s_per_call": {n: {w: round(best(n, w, "sys_s_per_step"), 3) for w in ("main", "thread")} for n in procs},
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
