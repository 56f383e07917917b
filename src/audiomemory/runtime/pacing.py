"""Time limits on a peer: a call's requests must keep coming, and its responses must be taken.

A caller can hold what a server gives a call (a handler thread, a model slot, room for its audio) by
sending nothing, or by not reading what it is sent. Both are bounded here, for every streaming RPC of
every service, by the one interceptor (``interceptor.py``):

- ``PacedRequests`` reads a request stream on a thread of its own into a one-message mailbox, one message
  each time the handler asks (nothing is read ahead: a call waiting in line after its first message holds
  no more of its upload), so the handler waits for the next message with a time limit. The limit is a
  *credit* of waiting time: it starts at ``window`` seconds, every second spent waiting for the peer
  spends one, and every byte that arrives earns ``1 / rate`` seconds back, up to ``window`` again. So a
  peer must send at least ``rate`` bytes a second, averaged over ``window`` seconds — one byte every 29 s
  does not keep a call alive, nor does a fast start followed by silence — and an upload of the size limit
  ends within ``window + max_bytes / rate`` seconds. Time the handler spends not reading (waiting in line,
  computing) costs nothing. Running out ends the call with DEADLINE_EXCEEDED naming the settings.
- ``SendWatch`` (one thread per server) cancels a call whose response has waited ``timeout`` seconds to be
  taken by its peer (gRPC's flow control holds a response until the peer reads): the handler's slot is
  released as the call ends.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from audiomemory.runtime.errors import DeadlineExceeded

log = logging.getLogger("audiomemory.pacing")
T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class ReadPolicy:
    """How fast a request stream must arrive: ``rate`` bytes/s averaged over ``window`` seconds."""

    rate: float  # min_request_rate
    window: float  # request_window_seconds

    def message(self, received: int) -> str:
        return (
            f"the request stream stalled: its peer sent less than min_request_rate={self.rate:.0f} bytes/s "
            f"averaged over request_window_seconds={self.window:g} ({received} bytes in all); "
            "the call is ended and what it held released"
        )


class PacedRequests(Generic[T]):
    """A request iterator whose every ``next()`` has a time limit (``ReadPolicy``); each message read, when
    asked for, on a thread started at the first ``next()`` (a call waiting in line reads nothing)."""

    def __init__(self, requests: Iterator[T], policy: ReadPolicy, on_message: Callable[[], None] | None = None,
                 name: str = "am-read") -> None:
        self._requests = requests
        self._policy = policy
        self._on_message = on_message
        self._name = name
        self._cond = threading.Condition()
        self._box: tuple[str, Any] | None = None  # ("item", message) | ("end", None) | ("error", exc)
        self._closed = False
        self._asked = False  # the handler waits for a message: the reading thread fetches one
        self._thread: threading.Thread | None = None
        self._credit = policy.window
        self._received = 0
        self._finished = False

    def __iter__(self) -> PacedRequests[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name=self._name, daemon=True)
            self._thread.start()
        start = time.monotonic()
        with self._cond:
            self._asked = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._box is not None, timeout=max(self._credit, 0.0)):
                self._finished = True
                raise DeadlineExceeded(self._policy.message(self._received))
            assert self._box is not None
            kind, value = self._box
            self._box = None
            self._cond.notify_all()
        if kind != "item":
            self._finished = True
            if kind == "error":
                raise value
            raise StopIteration
        size = value.ByteSize() if hasattr(value, "ByteSize") else 0
        self._received += size
        self._credit = min(self._policy.window, self._credit - (time.monotonic() - start) + size / self._policy.rate)
        if self._on_message is not None:
            self._on_message()
        return value

    def close(self) -> None:
        """The handler is done: the reading thread stops at its next message (or when the call ends)."""
        with self._cond:
            self._closed = True
            self._box = None
            self._cond.notify_all()

    def _wait_asked(self) -> bool:
        """Block until the handler asks for a message (True) or is done (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self._asked or self._closed)
            return not self._closed

    def _put(self, kind: str, value: Any) -> bool:
        with self._cond:
            if self._closed:
                return False
            self._asked = False
            self._box = (kind, value)
            self._cond.notify_all()
            return True

    def _pump(self) -> None:
        try:
            while self._wait_asked():
                item = next(self._requests, _END)
                if item is _END:
                    self._put("end", None)
                    return
                if not self._put("item", item):
                    return
        except Exception as exc:  # the call ended under us (cancelled, deadline): the handler hears it
            self._put("error", exc)


class SendWatch:
    """Cancels a call whose response its peer has not taken within ``timeout`` seconds (one thread)."""

    def __init__(self, timeout: float, service: str) -> None:
        self.timeout = timeout
        self._service = service
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        self.cancelled = 0  # calls ended for not reading (metrics, tests)

    def arm(self, context: grpc.ServicerContext) -> int:
        """A response to ``context`` is being sent; ``disarm(key)`` once it was taken."""
        key = next(self._keys)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name=f"am-{self._service}-sends", daemon=True)
                self._thread.start()
            # Deadlines only grow (same timeout, later now): the watcher sleeping on the earliest needs a
            # wake-up only when it had nothing to watch.
            if not self._pending:
                self._cond.notify_all()
            self._pending[key] = (time.monotonic() + self.timeout, context)
        return key

    def disarm(self, key: int) -> None:
        with self._cond:
            self._pending.pop(key, None)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                key, (deadline, context) = min(self._pending.items(), key=lambda kv: kv[1][0])
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._pending[key]
                self.cancelled += 1
            log.warning("%s: a peer (%s) took no response for send_timeout_seconds=%g: call cancelled",
                        self._service, context.peer(), self.timeout)
            context.cancel()
