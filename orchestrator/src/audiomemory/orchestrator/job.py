"""One job's concurrency: structured threads whose cancellation, deadline and liveness arrive as events.

The orchestrator serves with gRPC's thread-per-call server (docs/DESIGN.md §1 says why), and a job is
written in one style to match:

- ``Job`` — the job's downstream calls and its tasks. ``cancel_all()`` (the caller going away, a failure,
  the end of the job) is one event that cancels every tracked gRPC call and wakes every blocked
  ``Channel`` at once; nothing polls for it.
- **Deadline**: a downstream call gets the time the caller has left (none when the caller set none).
- **Liveness by progress**: every streaming call sends something at least every few seconds while it
  works or waits. ``Job.stream`` iterates a call's replies; one watchdog thread per job sleeps until the
  earliest moment a call (or its group) would have been silent for ``stall_seconds`` — a deadline, not a
  poll — and cancels it then (DEADLINE_EXCEEDED naming the service).
- ``TaskGroup`` — threads that end together: the first failure cancels the job, the group joins every
  thread before it returns, and re-raises the failure of the earliest-started task that failed (the
  separator's, when its consumers only saw their input end early).
- ``Channel`` — a bounded hand-off between two tasks (the separator's pieces to the audio encoder's
  request stream): ``put`` waits while it is full, iteration while it is empty; both wake on the job's
  cancellation.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from audiomemory.runtime.errors import AudioMemoryError, Cancelled, DeadlineExceeded
from audiomemory.runtime.interceptor import REQUEST_ID_KEY, current_request_id

T = TypeVar("T")
_NO_DEADLINE_S = 10 * 365 * 86400.0


class _Watched:
    """A streaming call and the clock it shares with its group (when it last heard anything)."""

    def __init__(self, call: Any, clock: list[float]) -> None:
        self.call = call
        self.clock = clock
        self.stalled = False


class Job:
    """The downstream calls and tasks of one job, so that all of them end at once."""

    def __init__(self, context: grpc.ServicerContext | None, stall_seconds: float) -> None:
        self.context = context
        self.stall_seconds = stall_seconds
        self.cancelled = threading.Event()
        self.metadata = ((REQUEST_ID_KEY, current_request_id()),)
        self._calls: list[Any] = []
        self._wakers: list[Callable[[], None]] = []
        self._watched: set[_Watched] = set()
        self._clocks: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None

    # -- cancellation ------------------------------------------------------------------------------
    def track(self, call: T) -> T:
        """Remember ``call`` (a gRPC call or future) so that ``cancel_all`` reaches it."""
        with self._lock:
            if not any(known is call for known in self._calls):
                self._calls.append(call)
            cancelled = self.cancelled.is_set()
        if cancelled:
            call.cancel()  # type: ignore[attr-defined]
        return call

    def open(self, start: Callable[[], T]) -> T:
        """``start()`` a downstream call and track it, unless the job is already cancelled (``Cancelled``):
        atomic with ``cancel_all``, so no call is opened after a job has ended."""
        with self._lock:
            if self.cancelled.is_set():
                raise Cancelled("the job was cancelled")
            call = start()
            self._calls.append(call)
        return call

    def on_cancel(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when the job is cancelled (at once if it already is)."""
        with self._lock:
            self._wakers.append(wake)
            cancelled = self.cancelled.is_set()
        if cancelled:
            wake()

    def cancel_all(self) -> None:
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            calls, wakers = list(self._calls), list(self._wakers)
            self._changed.notify_all()  # the watchdog ends
        for call in calls:
            call.cancel()
        for wake in wakers:
            wake()

    def check(self) -> None:
        if self.cancelled.is_set() or (self.context is not None and not self.context.is_active()):
            raise Cancelled("the caller cancelled the job")

    def timeout(self) -> float | None:
        """Seconds a downstream call may take: what the caller has left (None: the caller set no deadline)."""
        remaining = self.context.time_remaining() if self.context is not None else None
        if remaining is None or remaining > _NO_DEADLINE_S:
            return None  # gRPC reports a caller without a deadline as one centuries away
        if remaining <= 0:
            raise DeadlineExceeded("the job ran out of time (the caller's deadline passed)")
        return remaining

    # -- liveness ----------------------------------------------------------------------------------
    def stream(
        self, call: Any, failed: Callable[[grpc.RpcError], AudioMemoryError], name: str, group: str | None = None
    ) -> Iterator[Any]:
        """The replies of a tracked streaming ``call``; it is cancelled when none comes for ``stall_seconds``.

        Calls of one ``group`` feed each other (the separator's stems are the audio encoder's input): a
        reply from any of them keeps all of them alive, so a call waiting for its input is not taken for
        a stalled one. A failure becomes ``failed(exc)`` (the project error naming the service), a stall
        DEADLINE_EXCEEDED saying that the ``name`` sent nothing for so long.
        """
        with self._lock:
            clock = self._clocks.setdefault(group, [time.monotonic()]) if group else [time.monotonic()]
            watched = _Watched(call, clock)
            self._watched.add(watched)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="am-orch-watchdog", daemon=True)
                self._watchdog.start()
            self._changed.notify_all()
        self.track(call)
        try:
            for reply in call:
                clock[0] = time.monotonic()
                yield reply
        except grpc.RpcError as exc:
            if watched.stalled:
                raise DeadlineExceeded(
                    f"the {name} sent nothing for {self.stall_seconds:.0f} s (no progress and no place in line); "
                    "gave up on it (the orchestrator's stall_seconds)"
                ) from None
            raise failed(exc) from None
        finally:
            with self._lock:
                self._watched.discard(watched)
                # A finished call needs no cancel: let go of it (and of the request stream it holds, the song).
                self._calls = [known for known in self._calls if known is not call]

    def _watch(self) -> None:
        """Sleep until the earliest moment a watched call would be stalled; cancel the ones that are."""
        with self._lock:
            while not self.cancelled.is_set():
                now = time.monotonic()
                stalled = [w for w in self._watched if now - w.clock[0] >= self.stall_seconds]
                for w in stalled:
                    w.stalled = True
                    self._watched.discard(w)
                    w.call.cancel()  # the call's own thread raises; cancel() does not block
                due = [w.clock[0] + self.stall_seconds for w in self._watched]
                self._changed.wait(timeout=max(min(due) - now, 0.0) if due else None)


class TaskGroup:
    """Threads of one job that end together (see the module docstring)."""

    def __init__(self, job: Job, name: str) -> None:
        self.job = job
        self.name = name
        self._threads: list[threading.Thread] = []
        self._failures: list[tuple[int, BaseException]] = []
        self._lock = threading.Lock()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """Run ``fn(*args)`` in a thread of this group (the caller's context copied); returns a function that
        gives its result once the group has ended."""
        index = len(self._threads)
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(fn(*args))
            except BaseException as exc:  # the group re-raises it; the job stops
                with self._lock:
                    self._failures.append((index, exc))
                self.job.cancel_all()

        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(run,), name=f"am-orch-{self.name}-{index}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return lambda: box[0]

    def __enter__(self) -> TaskGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.job.cancel_all()
        for thread in self._threads:
            thread.join()
        if exc is None and self._failures:
            # A task's own failure before one that only saw the job cancelled; then the earliest-started task's.
            failure = min(self._failures, key=lambda failure: (isinstance(failure[1], Cancelled), failure[0]))[1]
            self._failures.clear()  # no cycle failure → traceback → this frame → group → failure: the frames'
            try:  # locals (a decoded song) would wait for Python's rare full collection
                raise failure
            finally:
                del failure


class _End:
    pass


END = _End()


class Channel(Generic[T]):
    """A bounded hand-off between two tasks of a job; iteration ends at ``close()``."""

    def __init__(self, job: Job, capacity: int) -> None:
        self.job = job
        self.capacity = capacity
        self._items: deque[T | _End] = deque()
        self._cond = threading.Condition()
        job.on_cancel(self._wake)

    def _wake(self) -> None:
        with self._cond:
            self._items.clear()  # a cancelled job's pieces (stems) are nobody's any more
            self._cond.notify_all()

    def put(self, item: T) -> None:
        """Hand over ``item``, waiting while the channel is full; ``Cancelled`` once the job is."""
        self._add(item)

    def close(self) -> None:
        """No more items: the reader's iteration ends once it has taken the ones already here."""
        self._add(END, always=True)

    def _add(self, item: T | _End, always: bool = False) -> None:
        with self._cond:
            while not always and len(self._items) >= self.capacity and not self.job.cancelled.is_set():
                self._cond.wait()
            if self.job.cancelled.is_set() and not always:
                raise Cancelled("the job was cancelled")
            self._items.append(item)
            self._cond.notify_all()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._cond:
                while not self._items and not self.job.cancelled.is_set():
                    self._cond.wait()
                if self.job.cancelled.is_set():
                    return
                item = self._items.popleft()
                self._cond.notify_all()
            if isinstance(item, _End):
                return
            yield item
