"""The attacks of the suite (what it measures: ``audiomemory.bench.attacks``) and its ``main``.

1. health flood, no token: 300 ``Health/Watch`` with 1 MiB service names (UNIMPLEMENTED at once), 300
   ``Check`` with 1 MiB names (INVALID_ARGUMENT), idle reflection streams (DEADLINE_EXCEEDED after
   ``request_window_seconds``; UNAUTHENTICATED on the token stack);
2. decompression bombs: a FLAC at 655 350 Hz (refused from its header) and 20 minutes of 384 kHz stereo
   silence (2 MB; accepted, decoded at 48 kHz: 461 MB legitimately held; the attacker cancels once decoding
   is done, since what follows is any 20-minute song's ordinary cost);
3. slot holders: (i) CreateImage streams that never send options: 8 (they must take no job slot), and 24,
   more than the front door takes at once (``max_concurrent_rpcs``, at most its handler threads: 18) — a
   caller may hold ``max_calls_per_caller`` (4) open, the rest are refused at once (RESOURCE_EXHAUSTED);
   (v) the same 24 with every other stream a ``CreateReel``: the limit counts a caller's calls of both kinds;
   (ii) options and 300 KB of a 48 kHz WAV promising 20 minutes, then silence; (iii) a job whose caller
   never reads a response (HTTP/2 stream window 0, ``clients.NonReader``); (iv) one caller with
   three jobs at once (token stack only). On the plaintext stack the front door listens on ``::`` and the
   victim comes from ::1, another caller than the attackers' 127.0.0.1;
4. file-borne: ``audiomemory reproduce`` of a PNG that names a profile beside it in the working directory,
   which points the separator at a Demucs repo whose ``.th`` pickle creates a marker file when unpickled
   (a control shows the pickle live: ``torch.load(weights_only=False)`` of it creates its marker). No server
   is involved: it runs while the stack starts, and has no RSS, victim or health figures.

The orchestrator runs with ``AUDIOMEMORY_ORCHESTRATOR_REQUEST_WINDOW_SECONDS=5`` and
``..._SEND_TIMEOUT_SECONDS=10`` (defaults 30 and 60) to keep the run short; the stack is in a child process
under ``RLIMIT_DATA`` (``--memory-cap-gb``; ``stack``). ``--quick`` is the smoke version (attack 4, and
attack 1 with 20 calls of each kind and no idle stream). ``main`` prints one line per attack and a last JSON
line, and exits 1 when any criterion fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # (before grpc is imported)
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from audiomemory.bench.attacks.clients import (
    NonReader,
    chunk,
    codes,
    flac,
    held_open,
    in_parallel,
    job,
    options,
    wav_header,
)
from audiomemory.bench.attacks.files import file_borne
from audiomemory.bench.attacks.stack import Measure, Stack, wav
from audiomemory.bench.certs import make_certs
from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

WINDOW_S, SEND_TIMEOUT_S = 5.0, 10.0
ENV = {"HF_HUB_OFFLINE": "1", "GRPC_VERBOSITY": "ERROR",
       "AUDIOMEMORY_ORCHESTRATOR_REQUEST_WINDOW_SECONDS": f"{WINDOW_S:g}",
       "AUDIOMEMORY_ORCHESTRATOR_SEND_TIMEOUT_SECONDS": f"{SEND_TIMEOUT_S:g}"}
MiB = 1 << 20
CALLS_PER_CALLER = 4  # the orchestrator's max_calls_per_caller (default)
FLOOD = 24  # silent streams: more than the orchestrator's calls at once (max_concurrent_rpcs, at most its threads)
BOMB_MB = 20 * 60 * 48_000 * 2 * 4 / 1e6  # 20 min decoded at 48 kHz, stereo float32: 461 MB
Stage = orchestrator_pb2.Stage


def health_flood(stack: Stack, n: int, idle: int) -> dict[str, Any]:
    """``n`` Watch and ``n`` Check with 1 MiB names, and ``idle`` reflection streams never sent to; no token."""
    name = "x" * MiB
    with stack.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch, check = [], []
        for start in range(0, n, 50):  # 50 at a time: 50 MiB of names in flight from this client
            batch = [stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=30)
                     for _ in range(start, min(n, start + 50))]
            for call in batch:
                try:
                    for _ in call:
                        pass
                    watch.append("OK")
                except grpc.RpcError as exc:
                    watch.append(exc.code().name)
            futures = [stub.Check.future(health_pb2.HealthCheckRequest(service=name), timeout=30)
                       for _ in range(start, min(n, start + 50))]
            check += [f.exception().code().name if f.exception() else "OK" for f in futures]
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        stop = threading.Event()
        idle_results = in_parallel([lambda: _idle_reflection(reflect, stop) for _ in range(idle)])
        stop.set()
    expected_idle = "UNAUTHENTICATED" if stack.certs is not None else "DEADLINE_EXCEEDED"
    return {"watch": _count(watch), "check": _count(check), "idle_reflection": codes(idle_results),
            "idle_reflection_ended_s": round(max((s for _, _, s in idle_results), default=0), 1),
            # RESOURCE_EXHAUSTED: refused by the server's calls-at-once limit, which health calls count against
            "as_expected": set(watch) <= {"UNIMPLEMENTED", "RESOURCE_EXHAUSTED"} and "UNIMPLEMENTED" in watch
            and set(check) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"} and "INVALID_ARGUMENT" in check
            and set(codes(idle_results)) <= {expected_idle}}


def _idle_reflection(stub: reflection_pb2_grpc.ServerReflectionStub, stop: threading.Event) -> tuple[str, str, float]:
    start = time.monotonic()

    def nothing() -> Any:
        stop.wait(120)
        yield from ()

    try:
        for _ in stub.ServerReflectionInfo(nothing(), timeout=120):
            pass
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or "", time.monotonic() - start
    return "OK", "", time.monotonic() - start


def _count(items: list[str]) -> dict[str, int]:
    return {k: items.count(k) for k in sorted(set(items))}


def bombs(stack: Stack, token: str | None, high: bytes, long: bytes) -> dict[str, Any]:
    """``high``, a FLAC at 655 350 Hz, then ``long``, 20 minutes of 384 kHz stereo silence (cancelled once
    it is decoded)."""
    with stack.channel(token) as channel:
        refused = job(channel, iter([options(filename="bomb.flac"), chunk(high)]))
        stages: list[str] = []

        def decoded(response: orchestrator_pb2.CreateImageResponse) -> bool:
            if response.WhichOneof("item") == "event":
                stages.append(Stage.Name(response.event.stage))
                return response.event.stage > Stage.STAGE_DECODING
            return False

        pieces = [chunk(long[i:i + MiB]) for i in range(0, len(long), MiB)]
        accepted = job(channel, iter([options(filename="bomb.flac"), *pieces]), until=decoded)
    return {"655350_hz": {"bytes": len(high), "status": refused[0], "details": refused[1][:120]},
            "384000_hz_20_min": {"bytes": len(long), "status": accepted[0], "seconds": round(accepted[2], 1),
                                 "last_stage": stages[-1] if stages else "", "details": accepted[1][:120]},
            "as_expected": refused[0] == "INVALID_ARGUMENT" and accepted[0] == "CANCELLED_BY_ATTACKER"}


def silent_streams(stack: Stack, token: str | None, n: int, reels: bool = False) -> dict[str, Any]:
    """``n`` CreateImage streams that send nothing at all (``reels``: every other one a CreateReel)."""
    stop = threading.Event()
    with stack.channel(token) as channel:
        results = in_parallel([partial(job, channel, held_open([], stop), reel=reels and i % 2 == 1)
                               for i in range(n)])
    stop.set()
    seen = codes(results)
    held = seen.get("DEADLINE_EXCEEDED", 0)
    return {"streams": n, "codes": seen, "ended_s": round(max(s for _, _, s in results), 1),
            "as_expected": set(seen) <= {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"} and held <= CALLS_PER_CALLER
            and held + seen.get("RESOURCE_EXHAUSTED", 0) == n}


def stalled_upload(stack: Stack, token: str | None) -> dict[str, Any]:
    """Options and 300 KB of a 48 kHz stereo WAV promising 20 minutes; then silence."""
    stop = threading.Event()
    first = [options(filename="long.wav"), chunk(wav_header(20 * 60))]
    with stack.channel(token) as channel:
        code, details, seconds = job(channel, held_open(first, stop))
    stop.set()
    return {"status": code, "details": details[:110], "ended_s": round(seconds, 1),
            "as_expected": code == "DEADLINE_EXCEEDED" and "min_request_rate" in details}


def non_reader(stack: Stack, token: str | None) -> dict[str, Any]:
    """A whole job from a caller that never grants its stream a byte of window."""
    client = NonReader(stack.address, stack.certs.ca if stack.certs else None,
                       stack.tokens[token] if token else None)
    start = time.monotonic()
    try:
        client.send_job(wav())
        ended = client.wait_end(SEND_TIMEOUT_S + 30)
    finally:
        client.close()
    return {"ended_by": ended, "ended_s": round(time.monotonic() - start, 1), "as_expected": ended is not None}


def one_caller_many_jobs(stack: Stack, token: str) -> dict[str, Any]:
    """One caller: a job uploading slowly (holds its one running share), a second (must wait in line), a
    third (must be refused: the share's one waiting place is taken)."""
    stop = threading.Event()
    song = wav(60, 48_000)

    def paced() -> Any:
        yield options(filename="slow.wav")
        for i in range(0, len(song), 32 * 1024):  # 128 KiB/s: twice min_request_rate
            if stop.wait(0.25):
                return
            yield chunk(song[i:i + 32 * 1024])

    out: dict[str, Any] = {}
    with stack.channel(token) as channel:
        first = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(paced(), timeout=120)
        time.sleep(2)
        second = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(
            held_open([options(filename="second.wav")], stop), timeout=120)
        seen = next(second, None)  # its first response: its place in line
        out["second"] = Stage.Name(seen.event.stage) if seen is not None else "none"
        third = job(channel, held_open([options(filename="third.wav")], stop), timeout=30)
        out["first_running"] = first.running()
        stop.set()
        first.cancel()
        second.cancel()
    return {**out, "third": third[0], "third_details": third[1][:120],
            "as_expected": out["second"] == "STAGE_QUEUED" and third[0] == "RESOURCE_EXHAUSTED"
            and out["first_running"]}


class Report(dict[str, dict[str, Any]]):
    """Attack name -> figures; prints one line per attack as it is recorded."""

    def record(self, name: str, figures: dict[str, Any]) -> None:
        self[name] = figures
        rest = {k: v for k, v in figures.items() if k not in ("ok", "as_expected", "failed")}
        failed = f"  failed: {figures['failed']}" if figures["failed"] else ""
        print(f"{'ok  ' if figures['ok'] else 'FAIL'} {name:38} {json.dumps(rest)}{failed}", flush=True)


def plain_attacks(report: Report, stack: Stack, quick: bool) -> None:
    measure = Measure(stack, None)
    measure(dict)  # the victim's first job pays for first-time allocations, outside every attack's figures
    n, idle = (20, 0) if quick else (300, 4)
    report.record("plain 1 health flood", measure(lambda: health_flood(stack, n, idle)))
    if quick:
        return
    high, long = flac(655_350, 5), flac(384_000, 20 * 60)
    report.record("plain 2 decompression bombs", measure(lambda: bombs(stack, None, high, long), legit_mb=BOMB_MB))
    report.record("plain 3i silent streams (8)", measure(lambda: silent_streams(stack, None, 8)))
    report.record(f"plain 3i silent streams ({FLOOD})", measure(lambda: silent_streams(stack, None, FLOOD)))
    report.record(f"plain 3v silent images+reels ({FLOOD})",
                  measure(lambda: silent_streams(stack, None, FLOOD, reels=True)))
    report.record("plain 3ii stalled upload", measure(lambda: stalled_upload(stack, None)))
    report.record("plain 3iii non-reading caller", measure(lambda: non_reader(stack, None)))


def tls_attacks(report: Report, stack: Stack) -> None:
    measure = Measure(stack, "victim")
    measure(dict)
    report.record("tls 1 health flood (no token)", measure(lambda: health_flood(stack, 300, 4)))
    report.record("tls 3i silent streams (8)", measure(lambda: silent_streams(stack, "attacker", 8)))
    report.record(f"tls 3i silent streams ({FLOOD})", measure(lambda: silent_streams(stack, "attacker", FLOOD)))
    report.record(f"tls 3v silent images+reels ({FLOOD})",
                  measure(lambda: silent_streams(stack, "attacker", FLOOD, reels=True)))
    report.record("tls 3ii stalled upload", measure(lambda: stalled_upload(stack, "attacker")))
    report.record("tls 3iii non-reading caller", measure(lambda: non_reader(stack, "attacker")))
    report.record("tls 3iv one caller, three jobs", measure(lambda: one_caller_many_jobs(stack, "attacker")))


def run_all(args: argparse.Namespace, work: Path) -> Report:
    cap = int(args.memory_cap_gb * (1 << 30))
    report = Report()
    file_figures: dict[str, Any] = {}  # no server in it: run while the stack starts
    reproduce = threading.Thread(target=lambda: file_figures.update(file_borne(work / "file", {**os.environ, **ENV})))
    reproduce.start()
    plain = Stack(cap, ENV).start()
    try:
        reproduce.join()
        report.record("4 file-borne (reproduce)", {**file_figures, "failed": [] if file_figures["as_expected"]
                                                   else ["attack"], "ok": file_figures["as_expected"]})
        plain_attacks(report, plain, args.quick)
    finally:
        plain.stop()
    if args.quick:
        return report
    tokens = {name: secrets.token_urlsafe(32) for name in ("attacker", "victim")}
    secured = Stack(cap, ENV, make_certs(work / "certs"), tokens, work).start()
    try:
        tls_attacks(report, secured)
    finally:
        secured.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="The attack suite of issue 20: hostile callers against "
                                     "audiomemory up --models tiny, plaintext and TLS + token.")
    parser.add_argument("--quick", action="store_true", help="the smoke version: attacks 1 (small) and 4")
    parser.add_argument("--memory-cap-gb", type=float, default=4.0, help="RLIMIT_DATA of the attacked stack")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="audiomemory-attacks-") as folder:
        report = run_all(args, Path(folder))
    passed = all(figures["ok"] for figures in report.values())
    print(json.dumps({"attacks": report, "all_ok": passed, "seconds": round(time.monotonic() - started),
                      "request_window_seconds": WINDOW_S, "send_timeout_seconds": SEND_TIMEOUT_S,
                      "memory_cap_gb": args.memory_cap_gb}), flush=True)
    sys.exit(0 if passed else 1)
