"""Separation and embedding sharing the CPU's cores, under OpenMP wait policies.

On one machine the separator and the audio encoder run at once (the stems stream from one into the
other), each a process with ``torch_threads`` = the core count, so twice as many compute threads as
cores. libgomp's threads spin before they sleep at each barrier; with the cores oversubscribed by
another process the spinning burns time the other one needed. This probe measures it: full-size
random-weight htdemucs (separating ``--seconds`` of a real song) and OpenL3 (embedding four stems'
worth of the same audio at the default hop), each loaded by its service's backend, alone and at once,
for each ``OMP_WAIT_POLICY`` given; and what the policy costs a model alone on the cores
(``--alone generate``: SD 1.5, one 512² image in 4 steps). Numbers do not change with the policy
(same kernels).

    python scripts/probe_overlap.py --song song.wav --seconds 60 --policies default PASSIVE
    python scripts/probe_overlap.py --alone separate generate --repeat 2 --no-together

Prints one line per run and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import write_models  # a sibling script (scripts/ is on sys.path when run)

ROLES = ("separate", "embed")
ALL_ROLES = (*ROLES, "generate")
KINDS = {"separate": "separator", "embed": "audio_encoder", "generate": "generator"}


def work(role: str, models: Path, song: Path, seconds: float) -> None:
    """One role in this process (``threads``: separating and embedding in two threads of it, as in
    ``audiomemory up``); prints each one's wall seconds after loading as JSON."""
    import threading

    import numpy as np
    import soundfile as sf

    from audiomemory.stack import definition

    audio, rate = sf.read(str(song), dtype="float32", frames=int(seconds * sf.info(str(song)).samplerate),
                          always_2d=True)
    audio = np.ascontiguousarray(audio.T)
    settings = write_models(models)  # written by the parent: here only their per-kind settings
    backends: dict[str, Any] = {}
    for name in ROLES if role == "threads" else (role,):
        kind = KINDS[name]
        backends[name] = definition(kind).make_backend(definition(kind).config_class.model_validate(settings[kind]))
        backends[name].load()
    print("loaded", flush=True)
    sys.stdin.readline()  # start together
    out: dict[str, float] = {}

    def one(name: str) -> None:
        begin = time.perf_counter()
        backend = backends[name]
        if name == "separate":
            for _ in backend.separate_blocks(audio, rate):
                pass
        elif name == "embed":
            for _ in range(4):  # four stems' worth
                backend.embed(audio, rate)
        else:  # one 512² image, 4 steps: the UNet alone on the cores, as after the front half
            from audiomemory.generator.backends import ImageRequest

            embeds = np.random.default_rng(0).standard_normal((2, 1, 77, 768)).astype(np.float32)
            backend.generate(ImageRequest(embeds[0], embeds[1], seed=1, steps=4, guidance=7.5, width=512,
                                          height=512, scheduler=""),
                             on_step=lambda done, total: None, should_stop=lambda: False)
        out[name] = round(time.perf_counter() - begin, 2)

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(name,)) for name in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out["makespan_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps(out), flush=True)


def run(roles: list[str], policy: str, args: argparse.Namespace) -> dict[str, float]:
    """``roles`` started together in processes of their own under ``policy``: each one's wall seconds."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen([sys.executable, __file__, "--role", role, "--models", str(args.models),
                               "--song", str(args.song), "--seconds", str(args.seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for role in roles]
    for proc in procs:
        assert proc.stdout is not None
        while proc.stdout.readline().strip() != "loaded":
            pass
    start = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out: dict[str, float] = {}
    for proc in procs:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        out.update({k: v for k, v in line.items() if k != "makespan_s"})  # the makespan is measured here
        proc.wait()
    out["makespan_s"] = round(time.perf_counter() - start, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("/tmp/audiomemory-bench-song/models"),
                    help="full-size random models (written there when absent; bench_song.py uses the same)")
    ap.add_argument("--song", type=Path, default=Path("/tmp/audiomemory-bench-song/song.wav"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    ap.add_argument("--alone", nargs="*", choices=ALL_ROLES, default=list(ROLES),
                    help="roles timed alone (each policy in turn, --repeat rounds)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the alone runs, policies alternating")
    ap.add_argument("--no-together", action="store_true", help="skip separating and embedding at once")
    ap.add_argument("--threads", action="store_true",
                    help="also separate and embed at once in two threads of one process (as `audiomemory up`)")
    ap.add_argument("--role", choices=[*ALL_ROLES, "threads"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return work(args.role, args.models, args.song, args.seconds)
    write_models(args.models)  # once, before any child reads them
    results: dict[str, Any] = {policy: {"alone": {role: [] for role in args.alone}} for policy in args.policies}
    for _ in range(args.repeat):
        for role in args.alone:
            for policy in args.policies:
                results[policy]["alone"][role].append(run([role], policy, args)[role])
                print(f"{policy}: {role} alone {results[policy]['alone'][role]}", flush=True)
    for policy in args.policies:
        if not args.no_together:
            together = run(list(ROLES), policy, args)
            alone = {role: min(results[policy]["alone"][role]) for role in ROLES if results[policy]["alone"].get(role)}
            results[policy]["together"] = together
            if len(alone) == len(ROLES):
                results[policy]["overhead"] = round(together["makespan_s"] / sum(alone.values()), 3)
            print(f"{policy}: together {together}, makespan / sum alone {results[policy].get('overhead')}", flush=True)
        if args.threads:
            results[policy]["threads"] = run(["threads"], policy, args)
            print(f"{policy}: in two threads of one process {results[policy]['threads']}", flush=True)
    print(json.dumps({"seconds": args.seconds, "cores": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
