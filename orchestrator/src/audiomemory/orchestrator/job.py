"""One ``CreateImage`` job's downstream calls: their deadline, their liveness, their cancellation.

- **Deadline**: the job's deadline is the caller's. A downstream call gets the time the caller has left
  (none when the caller set none) — no fixed per-call deadline, which a long song on a slow machine
  could not meet.
- **Liveness by progress**: every streaming call sends something at least every few seconds while it
  works or waits (stems, frames, steps, its place in line). ``Job.stream`` iterates a call's replies
  and gives it up (DEADLINE_EXCEEDED naming the service) when nothing came for ``stall_seconds``.
- **Cancellation**: every call is tracked; the caller going away, a failure or the end of the job
  cancels all of them, so a cancelled job leaves no work running downstream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from audiomemory.runtime.errors import AudioMemoryError, Cancelled, DeadlineExceeded
from audiomemory.runtime.interceptor import REQUEST_ID_KEY, current_request_id

T = TypeVar("T")
_WATCH_EVERY_S = 0.5
_NO_DEADLINE_S = 10 * 365 * 86400.0


class _Clock:
    """When a call (or any call of its group) last sent something."""

    def __init__(self) -> None:
        self.last = time.monotonic()


class _Watched:
    def __init__(self, call: Any, clock: _Clock) -> None:
        self.call = call
        self.clock = clock
        self.stalled = False


class Job:
    """The downstream calls of one job, so that all of them can be cancelled at once."""

    def __init__(self, context: grpc.ServicerContext, stall_seconds: float) -> None:
        self.context = context
        self.stall_seconds = stall_seconds
        self.cancelled = threading.Event()
        self.metadata = ((REQUEST_ID_KEY, current_request_id()),)
        self._calls: list[Any] = []
        self._watched: set[_Watched] = set()
        self._clocks: dict[str, _Clock] = {}
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def track(self, call: T) -> T:
        """Remember ``call`` (a gRPC call or future) so that ``cancel_all`` reaches it."""
        with self._lock:
            self._calls.append(call)
            if self.cancelled.is_set():
                call.cancel()  # type: ignore[attr-defined]
        return call

    def cancel_all(self) -> None:
        self.cancelled.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def timeout(self) -> float | None:
        """Seconds a downstream call may take: what the caller has left (None: the caller set no deadline)."""
        remaining = self.context.time_remaining()
        if remaining is None or remaining > _NO_DEADLINE_S:
            return None  # gRPC reports a caller without a deadline as one centuries away
        if remaining <= 0:
            raise DeadlineExceeded("the job ran out of time (the caller's deadline passed)")
        return remaining

    def check(self) -> None:
        if self.cancelled.is_set() or not self.context.is_active():
            raise Cancelled("the caller cancelled the job")

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
            clock = self._clocks.setdefault(group, _Clock()) if group else _Clock()
        watched = _Watched(self.track(call), clock)
        with self._lock:
            self._watched.add(watched)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="am-orch-watchdog", daemon=True)
                self._watchdog.start()
        try:
            for reply in call:
                clock.last = time.monotonic()
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

    def _watch(self) -> None:
        while not self.cancelled.wait(_WATCH_EVERY_S):
            now = time.monotonic()
            with self._lock:
                stalled = [w for w in self._watched if now - w.clock.last > self.stall_seconds]
            for w in stalled:
                w.stalled = True
                w.call.cancel()
