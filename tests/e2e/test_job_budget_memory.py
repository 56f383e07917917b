"""Memory does not grow with the number of callers (docs/DESIGN.md §4: a queued job is not read until it runs;
running jobs share ``max_audio_bytes``).

- The queue itself, measured where nothing else moves: ``audiomemory up --models tiny`` with both job slots
  held by callers who have sent their options and one piece of their file (they hold a slot and no room),
  then 8 callers of a 2-minute WAV (21 MB; 42 MB decoded) at once, all waiting in line. The stack's RSS may
  grow by less than two of their files: a waiting caller that held its upload would add 8 × 21 MB, one that
  decoded it 8 × 42 MB (with room for all of them, as with ``concurrency=10``, they add 2.5 GB).
- A failed or cancelled job lets go of what its frames held before its slot passes on
  (``servicer._frames_let_go``): its tracebacks would otherwise keep the decoded song and stems alive.
- ``make reliability``'s script (peak RSS with 4 callers twice against 8 at once, cancelling jobs as they
  run: RELIABILITY.md has its 18-minute figures) runs here as a smoke test of its JSON lines, on a short song:
  peaks of jobs running model code on two busy cores say little at this size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import soundfile as sf

from audiomemory.bench.memory import rss_mb, stack_up
from audiomemory.client import Client, build_options
from audiomemory.orchestrator.servicer import _frames_let_go
from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability_memory.py"  # what `make reliability` runs
RATE = 44_100
WAITING = 8


def two_minute_wav(path: Path) -> Path:
    t = np.arange(120 * RATE) / RATE
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, np.stack([x, 0.8 * x], axis=1), RATE, subtype="PCM_16")
    return path


def holding(first_piece: bytes, release: threading.Event) -> Iterator[orchestrator_pb2.CreateImageRequest]:
    """A caller that takes a job slot and sends no more than one piece of its file until ``release``."""
    yield orchestrator_pb2.CreateImageRequest(options=build_options("hold", filename="song.wav", seed=0, steps=1))
    yield orchestrator_pb2.CreateImageRequest(file_chunk=first_piece)
    release.wait(25)  # within the upload's 30-s credit (runtime.pacing): the slot stays held


def wait_in_line(address: str, song: Path, seed: int, places: dict[int, Any], leave: threading.Event) -> None:
    """One caller: upload the whole song, note its place in line, leave (cancel) once ``leave`` is set."""
    with Client(address) as client:
        job = client.start_image(song, lyrics="waiting", seed=seed, steps=1)
        try:
            for event in job:
                if event.stage == orchestrator_pb2.Stage.STAGE_QUEUED:
                    places.setdefault(seed, event.current)
                if leave.is_set():
                    return
        except grpc.RpcError as exc:
            places[seed] = exc.code().name
        finally:
            job.cancel()


@pytest.mark.timeout(180)
def test_eight_callers_waiting_in_line_hold_less_than_two_of_their_files(tmp_path: Path) -> None:
    song = two_minute_wav(tmp_path / "song.wav")
    file_mb = song.stat().st_size / 2**20
    release, leave = threading.Event(), threading.Event()
    with stack_up() as (proc, address):
        channels = [grpc.insecure_channel(address) for _ in range(2)]
        holders = [orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(
            holding(song.read_bytes()[:65536], release)) for channel in channels]
        places: dict[int, Any] = {}
        callers = [threading.Thread(target=wait_in_line, args=(address, song, seed, places, leave))
                   for seed in range(WAITING)]
        try:
            time.sleep(0.5)  # the holders take both slots (the places asserted below say they held them throughout)
            before = rss_mb(proc.pid)
            for caller in callers:
                caller.start()
            deadline = time.monotonic() + 20
            while len(places) < WAITING and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # their uploads keep coming as far as gRPC's flow control lets them
            grown = rss_mb(proc.pid) - before
        finally:
            leave.set()
            release.set()
            for holder in holders:
                holder.cancel()
            for caller in callers:
                if caller.ident is not None:
                    caller.join(30)
            for channel in channels:
                channel.close()
    assert sorted(places.values()) == list(range(1, WAITING + 1)), places  # every caller waited in line
    assert grown < 2 * file_mb, f"{WAITING} callers waiting in line: +{grown:.1f} MB (their files: {file_mb:.1f} MB)"


class _Song:
    """Stands for a job's decoded song: it refers to itself, as the job's tasks and their futures do."""

    def __init__(self) -> None:
        self.cycle = self


def _failing_job(songs: list[weakref.ref[_Song]]) -> None:
    song = _Song()  # a local of a frame the failure passes through
    songs.append(weakref.ref(song))
    raise RuntimeError("cancelled by its caller")


def test_a_failed_jobs_frames_let_go_of_its_song_while_its_error_is_still_held() -> None:
    songs: list[weakref.ref[_Song]] = []
    try:
        _failing_job(songs)
    except RuntimeError as exc:
        kept = exc
    assert songs[0]() is not None  # without it, the error's traceback keeps the song (and its slot's successor waits)
    with pytest.raises(RuntimeError) as caught, _frames_let_go():
        _failing_job(songs)
    assert caught.value.__traceback__ is not None and kept.__traceback__ is not None
    assert songs[1]() is None  # gone while the error (and where it failed) is still in hand


@pytest.mark.long
@pytest.mark.timeout(300)
def test_the_memory_script_prints_each_count_and_the_growth(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--song-minutes", "0.5", "--clients", "1x2", "2", "--cancel-at", "separating",
         "--work", str(tmp_path)], capture_output=True, text=True, timeout=280, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, f"exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    one, two, report = (json.loads(line) for line in run.stdout.strip().splitlines()[-3:])
    assert set(report) == {"song_mb", "song_minutes", "growth_mb", "growth_within_512_mb",
                           "only_ok_exhausted_or_cancelled", "health_serving_throughout"}
    assert report["only_ok_exhausted_or_cancelled"] is True and report["health_serving_throughout"] is True
    assert report["growth_mb"] == pytest.approx(two["peak_rss_mb"] - one["peak_rss_mb"], abs=0.11)
    for counted, clients, rounds in ((one, 1, 2), (two, 2, 1)):
        assert (counted["clients"], counted["rounds"], counted["cancel_at"]) == (clients, rounds, "separating")
        assert set(counted["statuses"]) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}, counted
        assert sum(counted["statuses"].values()) == clients * rounds
        assert counted["peak_rss_mb"] >= counted["rss_before_mb"] > 0
