"""The ``Gate`` in front of a service's model: readiness, a bounded first-come-first-served queue.

``concurrency`` calls hold a slot at once, ``max_queue`` more wait in arrival order, the next one is
refused with RESOURCE_EXHAUSTED saying how busy the service is. Two ways to take a slot:

- ``with gate.slot(context):`` blocks until the slot is free (unary RPCs, short work);
- a streaming RPC that should say it is waiting (and so prove it is alive while it waits)::

      with gate.admit(context) as turn:            # refused here when the queue is full
          for position in turn.waiting():        # at first, then every HEARTBEAT_SECONDS
              yield Response(queued=QueueStatus(position=position, running=gate.running_count))
          ...                                      # the slot is held from here to the end of the block

A caller that goes away while waiting is dropped from the queue (``Cancelled``); the slot is always
given back, whatever ends the block.

Heartbeats tell the truth: with ``track_progress()`` (every service's gate; the interceptor reports each
message a call sends or reads through ``progressed``), a waiting call reports its place again only once a
call holding a slot has made progress since its last report — so a running call that hangs is not hidden
from a queued caller's stall rule by the queue's own heartbeats.

A gate may share its slots by caller (``per_owner``: the orchestrator's job gate, one running job per
caller by default): a call whose owner already holds ``per_owner`` slots waits, and the next free slot
goes to the first call in line whose owner is under its share; an owner may also keep at most
``per_owner`` calls waiting. So one caller cannot hold every slot nor fill the line.

A gate may also have a ``capacity`` that admitted calls share by ``weight`` (the orchestrator's budget of
decoded audio in bytes): a call takes its slot when a slot is free *and* its weight fits beside what the
holders hold (a weight above the capacity counts as the whole capacity, so it runs alone); still first
come, first served, so a heavy call is not starved by light ones behind it. ``Turn.resize`` lowers a
holder's weight once it knows its real size.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator

import grpc

from audiomemory.runtime.errors import Cancelled, FailedPrecondition, ResourceExhausted, Unavailable

_POLL_S = 0.05  # how often a waiter checks that its caller is still there
#: How often a waiting streaming call reports its place in line (``QueueStatus``): well under the
#: orchestrator's stall limit, so a queued call is never taken for a dead one.
HEARTBEAT_SECONDS = 5.0
#: The retry hint of a refusal, per call queued ahead of a slot (a client's retry policy waits this long).
RETRY_AFTER_S = 5.0


class Turn:
    """One admitted call's place in the gate: waiting until ``waiting()`` ends, then holding a slot."""

    def __init__(self, gate: Gate, ticket: int, context: grpc.ServicerContext | None, weight: int = 0,
                 owner: str | None = None) -> None:
        self._gate = gate
        self.ticket = ticket
        self._context = context
        self.weight = gate._fit(weight)
        self.owner = owner
        self.holding = False

    @property
    def position(self) -> int:
        """1 = the next call to run; 0 once this call holds a slot."""
        return 0 if self.holding else self._gate._position(self.ticket)

    def waiting(self, every: float = HEARTBEAT_SECONDS) -> Iterator[int]:
        """Block until this call holds a slot, yielding its queue position at first and every ``every`` s."""
        last = time.monotonic()
        first = True
        while not self.holding:
            if self._gate._try_take(self):
                self.holding = True
                return
            if self._context is not None and not self._context.is_active():
                raise Cancelled("the caller went away while waiting for the model")
            now = time.monotonic()
            if first or (now - last >= every and self._gate._moved_since(last)):
                first, last = False, now
                yield self.position
            self._gate._wait(_POLL_S)

    def take(self) -> None:
        """Wait for the slot without reporting (``waiting`` with no one to tell)."""
        for _ in self.waiting(every=float("inf")):
            pass

    def resize(self, weight: int) -> None:
        """Hold ``weight`` from now on, if that is less than held (what is given back may admit others)."""
        self._gate._resize(self, weight)

    def grow(self, weight: int) -> bool:
        """Hold ``weight`` from now on if that is more than held and it fits now; False (holding what it
        held) otherwise. Never waits: a holder that cannot grow gives up, it does not queue behind others."""
        return self._gate._grow(self, weight)


class Gate:
    """Readiness plus a bounded, first-come-first-served queue in front of the model."""

    def __init__(self, concurrency: int = 1, max_queue: int = 8, capacity: int | None = None,
                 per_owner: int | None = None) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.capacity = capacity
        self.per_owner = per_owner
        self._turns: dict[int, Turn] = {}  # id(context) → its turn, for ``progressed``
        self._tracking = False
        self._progress_at = time.monotonic()
        self.used = 0  # the holders' weights
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._waiting: list[int] = []  # tickets in arrival order
        self._running = 0
        self._owners: dict[int, str | None] = {}  # ticket → owner
        self._held: collections.Counter[str | None] = collections.Counter()  # owner → slots held

    def check_ready(self) -> None:
        if self.load_error is not None:
            raise FailedPrecondition(f"the model failed to load: {self.load_error}")
        if not self.ready.is_set():
            raise Unavailable("the model is still loading; retry when health reports SERVING")

    @property
    def waiting_count(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def running_count(self) -> int:
        with self._cond:
            return self._running

    def track_progress(self) -> None:
        """Queued calls report their place only while holders make progress (``progressed``)."""
        self._tracking = True

    def progressed(self, context: grpc.ServicerContext) -> None:
        """``context``'s call sent or read a message: progress, if it holds a slot."""
        turn = self._turns.get(id(context))
        if turn is not None and turn.holding:
            self._progress_at = time.monotonic()

    @contextlib.contextmanager
    def admit(self, context: grpc.ServicerContext | None = None, weight: int = 0,
              owner: str | None = None) -> Iterator[Turn]:
        """A place in the queue (RESOURCE_EXHAUSTED when it is full); the slot, once taken, is freed on exit.
        ``weight``: the share of ``capacity`` the call holds with its slot; ``owner``: whose call it is."""
        self.check_ready()
        with self._cond:
            self._check_room(owner)
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            turn = Turn(self, ticket, context, weight, owner)
            self._owners[ticket] = owner
            if context is not None:
                self._turns[id(context)] = turn
        try:
            yield turn
        finally:
            with self._cond:
                if turn.holding:
                    self._running -= 1
                    self.used -= turn.weight
                    self._held[owner] -= 1
                elif ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._owners.pop(ticket, None)
                if context is not None and self._turns.get(id(context)) is turn:
                    del self._turns[id(context)]
                self._cond.notify_all()

    def _check_room(self, owner: str | None) -> None:
        """RESOURCE_EXHAUSTED with a retry hint when the line is full, or the owner's share of it is."""
        if self._running + len(self._waiting) >= self.concurrency + self.max_queue:
            retry_s = RETRY_AFTER_S * (1 + len(self._waiting) // max(self.concurrency, 1))
            raise ResourceExhausted(
                f"server busy: {self._running} model call(s) running and {len(self._waiting)} waiting "
                f"(limit max_queue={self.max_queue}); retry in about {retry_s:.0f} s or add replicas",
                retry_after_ms=int(retry_s * 1000),
            )
        if self.per_owner is not None:
            waiting = sum(1 for t in self._waiting if self._owners.get(t) == owner)
            if waiting >= self.per_owner:
                raise ResourceExhausted(
                    f"this caller already has {self._held[owner]} job(s) running and {waiting} waiting "
                    f"(limit caller_share={self.per_owner} of each); retry when one ends",
                    retry_after_ms=int(RETRY_AFTER_S * 1000),
                )

    @contextlib.contextmanager
    def slot(self, context: grpc.ServicerContext | None = None) -> Iterator[None]:
        """Hold one of ``concurrency`` model slots; give up if the caller goes away while waiting."""
        with self.admit(context) as turn:
            turn.take()
            yield

    # -- for Turn ---------------------------------------------------------------------------------
    def _position(self, ticket: int) -> int:
        with self._cond:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def _fit(self, weight: int) -> int:
        return max(0, weight if self.capacity is None else min(weight, self.capacity))

    def _next_in_line(self) -> int | None:
        """The first waiting ticket whose owner is under its share."""
        if self.per_owner is None:
            return self._waiting[0] if self._waiting else None
        return next((t for t in self._waiting if self._held[self._owners.get(t)] < self.per_owner), None)

    def _try_take(self, turn: Turn) -> bool:
        with self._cond:
            fits = self.capacity is None or self.used + turn.weight <= self.capacity
            if self._running < self.concurrency and fits and self._next_in_line() == turn.ticket:
                self._waiting.remove(turn.ticket)
                self._running += 1
                self.used += turn.weight
                self._held[turn.owner] += 1
                self._progress_at = time.monotonic()  # a call starting is the line moving
                return True
            return False

    def _moved_since(self, when: float) -> bool:
        """Whether a holder made progress (or none is running) since ``when``; always, when not tracking."""
        if not self._tracking:
            return True
        with self._cond:
            idle = self._running == 0
        return idle or self._progress_at > when

    def _resize(self, turn: Turn, weight: int) -> None:
        with self._cond:
            weight = self._fit(weight)
            if turn.holding and weight < turn.weight:
                self.used -= turn.weight - weight
                turn.weight = weight
                self._cond.notify_all()

    def _grow(self, turn: Turn, weight: int) -> bool:
        with self._cond:
            weight = self._fit(weight)
            if not turn.holding or (self.capacity is not None and self.used - turn.weight + weight > self.capacity):
                return False
            if weight > turn.weight:
                self.used += weight - turn.weight
                turn.weight = weight
            return True

    def _wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)
