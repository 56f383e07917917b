"""The job's structured threads: cancellation as one event, tasks that end together, a bounded hand-off, and
a watchdog that gives up on a silent call (orchestrator/job.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from audiomemory.orchestrator.job import Channel, Job, TaskGroup
from audiomemory.runtime.errors import AudioMemoryError, Cancelled, DeadlineExceeded, InvalidInput


class _Call(grpc.RpcError):
    """A streaming call's replies as the client sees them: what ``send`` hands it, until it is cancelled."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.cond = threading.Condition()
        self.cancelled = False

    def send(self, reply: str) -> None:
        with self.cond:
            self.replies.append(reply)
            self.cond.notify_all()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()

    def __iter__(self) -> Iterator[str]:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.replies or self.cancelled)
                if self.cancelled:
                    raise self
                reply = self.replies.pop(0)
            yield reply


def _failed(exc: grpc.RpcError) -> AudioMemoryError:
    return AudioMemoryError("the call failed")


def test_a_full_channel_blocks_its_writer_until_read_and_a_cancel_wakes_it_at_once() -> None:
    job = Job(None, 60)
    channel: Channel[int] = Channel(job, 2)
    channel.put(1)
    channel.put(2)
    outcome: list[BaseException | None] = []

    def writer() -> None:
        try:
            channel.put(3)
            outcome.append(None)
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # full: waits
    start = time.monotonic()
    job.cancel_all()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 1.0
    assert isinstance(outcome[0], Cancelled)


def test_a_channel_hands_over_in_order_and_its_reader_ends_at_close() -> None:
    job = Job(None, 60)
    channel: Channel[int] = Channel(job, 1)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(channel))
    reader.start()
    for i in range(50):
        channel.put(i)
    channel.close()
    reader.join(5)
    assert got == list(range(50))


def test_a_failing_task_cancels_the_job_and_its_own_error_wins_over_the_cancellations_it_caused() -> None:
    job = Job(None, 60)
    channel: Channel[int] = Channel(job, 1)

    def waits_for_input() -> None:  # started first: sees only the job cancelled
        for _ in channel:
            pass
        raise Cancelled("the job was cancelled")

    def fails() -> None:
        time.sleep(0.1)
        raise InvalidInput("the encoder refused the audio")

    with pytest.raises(InvalidInput, match="refused"), TaskGroup(job, "t") as tasks:
        tasks.spawn(waits_for_input)
        tasks.spawn(fails)
    assert job.cancelled.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("am-orch-t-")]  # every thread joined


def test_the_earliest_task_error_is_the_root_cause_when_several_tasks_fail() -> None:
    job = Job(None, 60)

    def fails(message: str, after: float) -> None:
        time.sleep(after)
        raise InvalidInput(message)

    with pytest.raises(InvalidInput, match="separator"), TaskGroup(job, "t") as tasks:
        tasks.spawn(fails, "separator: bad audio", 0.2)
        tasks.spawn(fails, "encoder: input ended early", 0.0)


def test_task_results_come_back_after_the_group_ends() -> None:
    job = Job(None, 60)
    with TaskGroup(job, "t") as tasks:
        first = tasks.spawn(lambda: 6 * 7)
        second = tasks.spawn(lambda x: x + 1, 1)
    assert (first(), second()) == (42, 2)
    assert not job.cancelled.is_set()


def test_a_silent_call_is_given_up_after_stall_seconds_naming_the_service() -> None:
    job = Job(None, 0.4)
    call = _Call()
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="the separator sent nothing for 0 s"):
        for _ in job.stream(call, _failed, "separator"):
            pass
    assert 0.35 < time.monotonic() - start < 2.0
    job.cancel_all()


def test_a_call_kept_alive_by_its_group_is_not_stalled_and_a_cancel_ends_it_as_a_failure() -> None:
    job = Job(None, 0.5)
    waiting, talking = _Call(), _Call()
    stop = threading.Event()

    def talk() -> None:
        while not stop.wait(0.1):
            talking.send("piece")

    threading.Thread(target=talk, daemon=True).start()
    def relay() -> None:
        with pytest.raises(AudioMemoryError):
            list(job.stream(talking, _failed, "separator", "stems"))

    threading.Thread(target=relay, daemon=True).start()
    threading.Timer(1.5, job.cancel_all).start()
    start = time.monotonic()
    with pytest.raises(AudioMemoryError, match="the call failed"):  # cancelled by the job, not stalled
        for _ in job.stream(waiting, _failed, "audio encoder", "stems"):
            pass
    assert time.monotonic() - start > 1.3  # the group's replies kept it alive past stall_seconds
    stop.set()


def test_no_call_is_opened_once_the_job_is_cancelled() -> None:
    """The cancellation flake's cause (a job's text encoder call opened after the job was cancelled, by a
    pool thread that started late) cannot recur: opening a call is atomic with ``cancel_all``."""
    job = Job(None, 60)
    opened: list[_Call] = []

    def start() -> _Call:
        call = _Call()
        opened.append(call)
        return call

    first = job.open(start)
    job.cancel_all()
    assert first.cancelled
    with pytest.raises(Cancelled):
        job.open(start)
    assert opened == [first]
