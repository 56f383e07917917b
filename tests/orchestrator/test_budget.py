"""The job budget: decoded audio in flight bounded in bytes; a job waits for room, told why."""

from __future__ import annotations

import threading

from audiomemory.runtime.service import RunningService
from audiomemory.v1 import orchestrator_pb2

from .conftest import JobResult, StartOrchestrator, run_job
from .songs import encode_song

Stage = orchestrator_pb2.Stage


def test_a_job_waits_for_room_for_its_decoded_audio_then_runs(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    # Two jobs at once (the default), room for one 2-s 22.05 kHz stereo song in float32 (353 kB decoded;
    # 723 kB reserved from its header: 2 s and a little room, capped at max_seconds) and not two, nor one
    # reserved beside another decoded: one job waits, told why, until the other's audio is done; both finish.
    orch = start_orchestrator(models, max_seconds=8.0, max_audio_bytes=1_000_000)
    song = encode_song("wav", 22050, 2, 2.0)
    results: dict[int, JobResult] = {}

    def job(n: int) -> None:
        results[n] = run_job(orch.address, song, seed=n, steps=1)

    threads = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    waited = {n: [e.message for e in r.events if e.stage == Stage.STAGE_QUEUED] for n, r in results.items()}
    assert sorted(bool(w) for w in waited.values()) == [False, True], waited
    message = next(w for w in waited.values() if w)[0]
    assert "waiting for memory" in message and "max_audio_bytes 1 MB" in message, message
    assert results[1].png and results[2].png
