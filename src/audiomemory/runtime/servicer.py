"""The base of every model servicer: what a call does around its model's work, written once.

A model service's streaming call, in order (docs/DESIGN.md §4):

1. **readiness** (``model()``: UNAVAILABLE while loading, FAILED_PRECONDITION when the load failed);
2. the request checked — for a request stream, its **first message** read for the options (``OptionsFirst``:
   the pin is in them), nothing more of the upload;
3. the **pin** (``identity.check_pin``: FAILED_PRECONDITION naming both identities) and a **place in line**
   (``Gate.admit``: RESOURCE_EXHAUSTED when the line is full) — both before anything is sent, so gRPC's
   retry policy, which retries only calls whose response has not started, moves the call to another replica;
4. the **``Served`` header** first (this replica's ``ModelInfo``, the same as ``Describe``'s, its identity and
   the parameters the call resolved), then **the place in line** (``QueueStatus``) at first and every
   ``HEARTBEAT_SECONDS`` while the call waits — only while a call holding a slot makes progress
   (``Gate.track_progress``; the interceptor reports each message as progress and holds every peer to its
   pace, ``pacing.py``);
5. the model's work, holding the slot; a response with no place in line (the text encoder's) waits silently.

``admitted`` is steps 3–5 as a ``with`` block; ``serve_stream`` is the whole of a request-streaming call
(Separate, Embed, Transcribe) given its ``StreamCall``. ``Worker`` runs a backend on a thread of its own while
the handler streams the progress it reports (the generator's denoising steps): cancellation reaches it
within a step, and the slot is held until it has stopped.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from audiomemory.runtime.backend import Backend, CancelCheck
from audiomemory.runtime.config import ServiceConfig
from audiomemory.runtime.errors import Cancelled, InvalidInput
from audiomemory.runtime.gate import Gate, Turn
from audiomemory.runtime.identity import check_pin, served
from audiomemory.v1 import common_pb2

B = TypeVar("B", bound=Backend)
C = TypeVar("C", bound=ServiceConfig)
R = TypeVar("R", bound=Message)  # a response message
R_co = TypeVar("R_co", covariant=True)
Q = TypeVar("Q", bound=Message)  # a request message
P = TypeVar("P")  # what a worker reports
T = TypeVar("T")  # what a worker returns


class OptionsFirst(Generic[Q]):
    """A request stream whose first message may carry the call's options, read at once (before a slot is
    asked for: the pin is in them); ``audio()`` gives the rest, each request checked to carry audio."""

    def __init__(self, requests: Iterator[Q], default_options: Any) -> None:
        self._requests = requests
        first: Any = next(requests, None)  # Any: each service's request has its own fields
        self._first = first
        self.count = 0 if first is None else 1  # requests read so far
        has = first is not None and first.HasField("options")
        self.options: Any = first.options if has else default_options
        if first is not None and not has and not first.HasField("audio"):
            raise InvalidInput(_empty(0))

    def audio(self) -> Iterator[tuple[int, Q]]:
        """``(index, request)`` of every request carrying audio, in order; options after the first request,
        or a request without audio, is INVALID_ARGUMENT naming it."""
        first, self._first = self._first, None
        if first is not None and first.HasField("audio"):
            yield 0, first
        request: Any
        for i, request in enumerate(self._requests, start=1):
            self.count = i + 1
            if request.HasField("options"):
                raise InvalidInput(f"requests[{i}].options: expected in the first request only (options come at "
                                   f"most once, before any audio), got it in request {i}")
            if not request.HasField("audio"):
                raise InvalidInput(_empty(i))
            yield i, request


def _empty(i: int) -> str:
    return (f"requests[{i}].audio: missing, an empty request (every request carries audio; the first may carry "
            "the options instead)")


class StreamCall(Protocol[Q, R_co]):
    """One request-streaming call, from its options on (``serve_stream``)."""

    def resolved(self) -> Mapping[str, object]:
        """The parameters this call resolved from its options (the ``Served`` header's)."""
        ...

    def run(self, requests: OptionsFirst[Q]) -> Iterator[R_co]:
        """Holding the slot: read the requests, answer."""
        ...


class ModelServicer(Generic[B, C]):
    """What all five model servicers share; a subclass sets ``kind`` and ``package`` and writes its RPCs."""

    kind: ClassVar[str]  # the service kind, as ModelInfo.service says it
    package: ClassVar[str]  # the serving distribution, whose version ModelInfo.version says

    def __init__(self, backend: B, gate: Gate, config: C) -> None:
        self.backend = backend
        self.gate = gate
        self.config = config

    def Describe(self, request: common_pb2.DescribeRequest, context: Any) -> Any:
        """This replica's model and the service's facts (``info``), once it is ready."""
        return self.info(self.model())

    @abstractmethod
    def info(self, model: common_pb2.ModelInfo) -> Any:
        """The service's ``Describe`` answer around ``model``."""

    def model(self) -> common_pb2.ModelInfo:
        """This replica's ``ModelInfo`` (``Describe``'s and every ``Served`` header's), once it is ready."""
        self.gate.check_ready()
        return self.backend.describe().to_proto(self.kind, package=self.package)

    @contextlib.contextmanager
    def admitted(self, context: grpc.ServicerContext, model: common_pb2.ModelInfo, pin: common_pb2.Pin,
                 resolved: Mapping[str, object], response: type[R]) -> Iterator[Iterator[R]]:
        """The pin checked and a place in line taken (nothing sent yet); inside the block, the opening
        messages to send (``Served``, then the place in line until the slot is held), and the slot after."""
        check_pin(pin, model, self.kind)
        with self.gate.admit(context) as turn:
            yield self._opening(turn, served(model, resolved), response)

    def _opening(self, turn: Turn, header: common_pb2.Served, response: type[R]) -> Iterator[R]:
        make: Callable[..., R] = response  # every model response has the oneof items served (and queued)
        yield make(served=header)
        if "queued" not in response.DESCRIPTOR.fields_by_name:
            turn.take()
            return
        for position in turn.waiting():
            yield make(queued=common_pb2.QueueStatus(position=position, running=self.gate.running_count))

    def serve_stream(self, context: grpc.ServicerContext, requests: Iterator[Q], default_options: Any,
                     call: Callable[[Any], StreamCall[Q, R]], response: type[R]) -> Iterator[R]:
        """A request-streaming call: readiness, its options (the first message), ``call(options)``'s checks,
        the pin and a place in line; then the opening and ``run`` holding the slot."""
        model = self.model()
        stream = OptionsFirst(requests, default_options)
        handler = call(stream.options)
        with self.admitted(context, model, stream.options.pin, handler.resolved(), response) as opening:
            yield from opening
            yield from handler.run(stream)


@dataclass(frozen=True)
class _Done(Generic[T]):
    result: T | None
    error: BaseException | None


class Worker(Generic[P, T]):
    """``work(report, should_stop)`` on a thread of its own (with the call's context variables, so it logs
    under the call's request id), started by ``reports()``, which yields what it reports while it runs.
    ``should_stop`` turns true when the call ends for any reason (cancel, deadline, disconnect); a handler
    that stops reading (the client went away at a yield) still waits for the work to stop, so the slot it
    holds is never given to the next call while this one's tail runs."""

    def __init__(self, context: grpc.ServicerContext, work: Callable[[Callable[[P], None], CancelCheck], T],
                 name: str) -> None:
        self._context = context
        self._work = work
        self._name = name
        self._stop = threading.Event()
        self._events: queue.Queue[P | _Done[T]] = queue.Queue()
        self.result: T | None = None  # set once the work returned
        # Fires on cancel, deadline, disconnect — and normal end; False means the call already ended.
        if not context.add_callback(self._stop.set):
            self._stop.set()

    def _should_stop(self) -> bool:
        return self._stop.is_set() or not self._context.is_active()

    def _run(self) -> None:
        try:
            self._events.put(_Done(self._work(self._events.put, self._should_stop), None))
        except BaseException as exc:  # handed to the handler's thread, which raises it
            self._events.put(_Done(None, exc))

    def reports(self) -> Iterator[P]:
        """Start the work and yield each report; then ``result`` holds what it returned. Its error is raised,
        except a cancellation once the caller is gone (nobody to answer)."""
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), name=self._name,
                                  daemon=True)
        thread.start()
        try:
            while not isinstance(event := self._events.get(), _Done):
                yield event
            if event.error is not None:
                if isinstance(event.error, Cancelled) and not self._context.is_active():
                    return
                raise event.error
            self.result = event.result
        finally:
            self._stop.set()
            thread.join()
