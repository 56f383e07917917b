"""Liveness by progress, not wall time: a silent service fails the job, a busy one only delays it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from audiomemory.runtime.service import RunningService, start_service
from audiomemory.separator.backends.demucs import DemucsBackend
from audiomemory.stack import definition
from audiomemory.v1 import orchestrator_pb2

from .conftest import StartOrchestrator, run_job
from .songs import encode_song

Stage = orchestrator_pb2.Stage


class SilentDemucs(DemucsBackend):
    """Demucs that reads the song and then goes quiet (a hung model) until the test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def separate_blocks(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.release.wait(30)
        yield from super().separate_blocks(*args, **kwargs)


@pytest.fixture(scope="module")
def stack(models: dict[str, RunningService], tiny: Any) -> Iterator[dict[str, RunningService]]:
    """The model services, with an audio encoder of its own that frames every 1 s and embeds 8 windows a call:
    its progress comes a few windows at a time, so a test sees it after seconds of audio, not minutes."""
    d = definition("audio_encoder")
    config = d.config_class(port=0, device="cpu", torch_threads=1,
                            **{**tiny("audio_encoder"), "hop_seconds": 1.0, "batch_size": 8})
    encoder = start_service(d, config, wait=True, wait_timeout=120)
    try:
        yield {**models, "audio_encoder": encoder}
    finally:
        encoder.stop(0)


def _silent_separator(tiny: Any, start_services: Any) -> tuple[SilentDemucs, RunningService]:
    """A separator service whose model goes quiet until its ``release`` is set."""
    d = definition("separator")
    config = d.config_class(port=0, device="cpu", torch_threads=1, **tiny("separator"))
    silent = SilentDemucs(config)
    return silent, start_services(d, config, silent)


def test_a_service_that_sends_nothing_for_stall_seconds_fails_the_job_naming_it(
    start_orchestrator: StartOrchestrator, stack: dict[str, RunningService], tiny: Any,
    start_services: Any,
) -> None:
    silent, separator = _silent_separator(tiny, start_services)
    orch = start_orchestrator({**stack, "separator": separator}, stall_seconds=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as info:
            run_job(orch.address, encode_song("wav", 16000, 1, seconds=1.0, seed=31), seed=1, steps=1)
    finally:
        silent.release.set()
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the separator sent nothing for 2 s" in info.value.details()
    assert time.monotonic() - started < 20


def test_a_job_waiting_behind_a_busy_service_hears_its_place_in_line_and_is_not_taken_for_stalled(
    start_orchestrator: StartOrchestrator, stack: dict[str, RunningService]
) -> None:
    # The separator's only slot is held, by a call making progress, for longer than the stall limit; the
    # queue's heartbeats (every 5 s) keep the job alive, and the job reports its place in line.
    # 8 s, not 6: the limit applies to every call of the job, and the full-size OpenL3 embeds this song in
    # one batch (one progress message), which took over 6 s beside another test (two xdist workers, loaded,
    # when the batch was 12 windows of mel256; it is 8 of mel128 now). The slot is held 1.5 s past the limit.
    orch = start_orchestrator(stack, stall_seconds=8.0)
    gate = stack["separator"].gate
    holding = threading.Event()
    done = threading.Event()

    class Holder:  # the context of a call that holds the slot and keeps sending
        def is_active(self) -> bool:
            return True

    def hold() -> None:
        holder = Holder()
        with gate.admit(holder) as turn:  # type: ignore[arg-type]
            turn.take()
            holding.set()
            until = time.monotonic() + 9.5
            while not done.wait(0.5) and time.monotonic() < until:
                gate.progressed(holder)  # type: ignore[arg-type]

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        result = run_job(orch.address, encode_song("wav", 16000, 1, seconds=1.0, seed=32), seed=1, steps=1)
    finally:
        done.set()
        holder.join()
    queued = [e for e in result.events if e.stage == Stage.STAGE_QUEUED]
    assert queued and queued[0].current == 1 and "separator" in queued[0].message
    assert result.png


def test_a_job_queued_behind_a_hung_call_is_not_kept_alive_by_the_queues_heartbeats(
    start_orchestrator: StartOrchestrator, stack: dict[str, RunningService], tiny: Any,
    start_services: Any,
) -> None:
    # The separator's model hangs in the first job's call: that job is taken for stalled, and so is the one
    # waiting behind it — heartbeats tell of a line that moves, not of one stuck behind a hung call.
    silent, separator = _silent_separator(tiny, start_services)
    orch = start_orchestrator({**stack, "separator": separator}, stall_seconds=6.0)
    errors: dict[int, grpc.RpcError] = {}

    def job(n: int) -> None:
        try:
            run_job(orch.address, encode_song("wav", 16000, 1, seconds=1.0, seed=40 + n), seed=n, steps=1)
        except grpc.RpcError as exc:
            errors[n] = exc

    def separating() -> float:  # calls in the hung separator: the first job holds its slot once this is 1
        return separator.metrics.registry.get_sample_value(
            "audiomemory_in_flight", {"service": "separator", "method": "Separate"}) or 0.0

    started = time.monotonic()
    threads = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
    try:
        threads[0].start()
        while separating() < 1 and time.monotonic() - started < 10:
            time.sleep(0.02)
        threads[1].start()  # in line behind the first
        for thread in threads:
            thread.join(25)
    finally:
        silent.release.set()
    assert time.monotonic() - started < 25
    assert sorted(errors) == [1, 2]
    assert {e.code() for e in errors.values()} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert all("the separator sent nothing" in e.details() for e in errors.values()), errors


def test_a_twenty_minute_song_is_accepted_and_separated_and_embedded_as_it_streams(
    start_orchestrator: StartOrchestrator, stack: dict[str, RunningService]
) -> None:
    # Every service takes the orchestrator's 20 minutes (checked from Describe at start-up); this one
    # goes as far as the first separated seconds and embedded frames of a 20-minute upload, then cancels.
    import io

    import numpy as np
    import soundfile as sf

    orch = start_orchestrator(stack)  # the default max_seconds: 1200
    rate, seconds = 8000, 1200
    t = np.arange(rate * seconds, dtype=np.float32) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16", format="WAV")
    seen: dict[int, orchestrator_pb2.StageEvent] = {}
    with grpc.insecure_channel(orch.address) as channel:
        from audiomemory.v1 import orchestrator_pb2_grpc

        from .conftest import requests

        call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(
            requests(buf.getvalue(), seed=1, steps=1, filename="long.wav"), timeout=120)
        for response in call:
            event = response.event
            seen.setdefault(event.stage, event)
            if event.stage == Stage.STAGE_EMBEDDING and event.current > 0:
                call.cancel()
                break
    separating = seen[Stage.STAGE_SEPARATING]
    assert separating.total == seconds
    embedding = seen[Stage.STAGE_EMBEDDING]
    assert 0 < embedding.current < embedding.total


def test_progress_inside_separation_and_embedding_comes_at_least_every_30_s(
    orchestrator_for_progress: RunningService, stack: dict[str, RunningService]
) -> None:
    # A song several separator segments long (three: the full-size OpenL3 embeds four stems of it, the
    # test's cost; the module's encoder frames them every second, 28 windows in batches of 8): the
    # separator's seconds and the encoder's frames are reported as they are done, a segment or a batch at a
    # time, never 30 s of wall time without an event between the first separation event and the last
    # embedding event.
    separator: Any = stack["separator"].backend
    encoder: Any = stack["audio_encoder"].backend
    segment = float(separator.describe().extra["segment"])
    batch = int(encoder.describe().extra["batch_size"])
    seconds = 3 * segment
    times: list[float] = []
    events: list[orchestrator_pb2.StageEvent] = []
    started = time.monotonic()
    with grpc.insecure_channel(orchestrator_for_progress.address) as channel:
        from audiomemory.v1 import orchestrator_pb2_grpc

        from .conftest import requests

        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for response in stub.CreateImage(requests(encode_song("wav", 22050, 2, seconds), seed=1, steps=1), timeout=300):
            if response.WhichOneof("item") == "event":
                times.append(time.monotonic() - started)
                events.append(response.event)
    stages = [e.stage for e in events]
    first, last = stages.index(Stage.STAGE_SEPARATING), len(stages) - 1 - stages[::-1].index(Stage.STAGE_EMBEDDING)
    gaps = [b - a for a, b in itertools.pairwise(times[first : last + 1])]
    assert max(gaps) <= 30, f"{max(gaps):.1f} s without progress"
    separated = [e.current for e in events if e.stage == Stage.STAGE_SEPARATING]
    embedded = [e.current for e in events if e.stage == Stage.STAGE_EMBEDDING]
    assert separated[-1] == events[first].total == round(seconds)
    assert len(set(separated)) >= 3 and max(b - a for a, b in itertools.pairwise(separated)) <= segment + 1
    assert embedded[-1] == events[last].total > 2 * batch  # several batches, each reported
    assert max(b - a for a, b in itertools.pairwise(embedded)) <= batch


@pytest.fixture
def orchestrator_for_progress(start_orchestrator: StartOrchestrator, stack: dict[str, RunningService]
                              ) -> RunningService:
    return start_orchestrator(stack)
