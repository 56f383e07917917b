"""One server interceptor: tokens, request ids, metrics, and project errors → gRPC status codes.

With ``auth_tokens`` configured, every call but ``grpc.health.v1`` (probes) must carry an accepted
``authorization: Bearer`` token, else it ends UNAUTHENTICATED with one line, logged with the caller's
address (the token is never logged); a host with too many failed attempts a minute gets
RESOURCE_EXHAUSTED at once, with a retry hint that grows while it goes on (``security.Throttle``).
Each call knows its caller (``current_caller()``: the token's name, else the peer's host), which the
orchestrator's job gate shares its slots by.

Every streaming call is held to its peer's pace (``pacing.py``): its requests must keep arriving
(``min_request_rate`` over ``request_window_seconds``, else DEADLINE_EXCEEDED), and a response its peer
does not take within ``send_timeout_seconds`` cancels it — reflection's streams included.

Servicers and backends raise ``errors.AudioMemoryError`` subclasses; this maps each to its status
code and logs it once with the request id. A ``grpc.RpcError`` from a downstream call keeps its
code. Anything else is a bug: logged with its traceback, answered INTERNAL with only the request id
(no internals leak to the caller).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.runtime.metrics import Metrics
from audiomemory.runtime.pacing import PacedRequests, ReadPolicy, SendWatch
from audiomemory.runtime.security import AUTHORIZATION, Throttle, TokenFile, peer_host

log = logging.getLogger("audiomemory.rpc")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("audiomemory_request_id", default="-")
caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("audiomemory_caller", default="-")
REQUEST_ID_KEY = "x-request-id"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # gRPC's own: a client's retry policy waits this long


def current_request_id() -> str:
    """The id of the RPC this thread is serving ("-" outside one); pass it downstream as metadata."""
    return request_id_var.get()


def current_caller() -> str:
    """Who makes the RPC this thread is serving: its token's name when tokens are on, else its peer's host
    (``security.peer_host``: without the port, one caller opening many connections is one caller)."""
    return caller_var.get()


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return uuid.uuid4().hex[:16]


_Tokens = tuple[contextvars.Token[str], contextvars.Token[str], str]  # request id, caller, and the caller
_OPEN = "/grpc.health."  # probes answer without a token; never drained or counted (unary, bounded)


def _refuse(handler: grpc.RpcMethodHandler, abort: Callable[[grpc.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s shape that ends the call through ``abort(context)`` (reading nothing)."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        abort(context)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return None


class ServiceInterceptor(grpc.ServerInterceptor):
    """Also tracks the service's own calls in flight, so a shutdown can drain them (see ``drain``)."""

    def __init__(
        self, metrics: Metrics, tokens: TokenFile | None = None, *, reads: ReadPolicy | None = None,
        sends: SendWatch | None = None, on_progress: Callable[[grpc.ServicerContext], None] | None = None,
        calls_per_caller: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.tokens = tokens
        self.reads = reads
        self.sends = sends
        self.on_progress = on_progress  # a message went to or came from the call (the gate's heartbeats)
        self.throttle = Throttle()  # failed token attempts per peer host
        self.calls_per_caller = calls_per_caller  # calls one caller may have open (None: no limit)
        self._open: collections.Counter[str] = collections.Counter()
        self._active = 0
        self._draining = False
        self._idle = threading.Condition()

    def drain(self, timeout: float) -> bool:
        """Refuse new calls with UNAVAILABLE; wait up to ``timeout`` s for in-flight ones. True if all ended."""
        with self._idle:
            self._draining = True
            return self._idle.wait_for(lambda: self._active == 0, timeout=timeout)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        full_method: str = handler_call_details.method
        if full_method.startswith(_OPEN):
            return handler
        caller = None
        if self.tokens is not None:
            refusal, caller = self._unauthenticated(handler_call_details)
            if refusal is not None:  # the peer is known only inside the call: refused there
                return _refuse(handler, lambda context: self._refused(full_method, refusal, context))
        method = full_method.rsplit("/", 1)[-1]
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            fn = self._wrap_unary(method, handler.unary_unary, caller)
            return grpc.unary_unary_rpc_method_handler(fn, **kwargs)
        if handler.stream_unary:
            fn = self._wrap_unary(method, self._paced(handler.stream_unary), caller)
            return grpc.stream_unary_rpc_method_handler(fn, **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._wrap_stream(method, handler.unary_stream, caller),
                                                        **kwargs)
        if handler.stream_stream:
            fn = self._wrap_stream(method, self._paced(handler.stream_stream), caller)
            return grpc.stream_stream_rpc_method_handler(fn, **kwargs)
        return handler

    def _paced(self, fn: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        """``fn`` reading its request stream through ``PacedRequests`` (when a read policy is set)."""
        reads = self.reads
        if reads is None:
            return fn
        progress = self.on_progress

        def paced(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            stream = PacedRequests(requests, reads, (lambda: progress(context)) if progress else None,
                                   name=f"am-{self.metrics.service}-read")
            try:
                result = fn(stream, context)
            except BaseException:
                stream.close()
                raise
            if isinstance(result, Iterator):  # a response stream reads as it goes: close when it ends
                return self._closing(result, stream)
            stream.close()
            return result

        return paced

    @staticmethod
    def _closing(responses: Iterator[Any], stream: PacedRequests[Any]) -> Iterator[Any]:
        try:
            yield from responses
        finally:
            stream.close()

    def _unauthenticated(self, details: grpc.HandlerCallDetails) -> tuple[str | None, str | None]:
        """(why the call may not proceed — one line, never the token — or None, the token's name)."""
        assert self.tokens is not None
        token = _bearer(details.invocation_metadata)
        if token is None:
            return "missing token: send 'authorization: Bearer TOKEN' (audiomemory --token or AUDIOMEMORY_TOKEN)", None
        name = self.tokens.who(token)
        if name is None:
            return "unknown token: it is not (or no longer) among this server's accepted tokens", None
        log.debug("%s by %s", details.method, name)
        return None, f"token:{name}"

    def _refused(self, method: str, why: str, context: grpc.ServicerContext) -> None:
        """End a call without an accepted token: UNAUTHENTICATED, or RESOURCE_EXHAUSTED at once while its
        host is throttled; logged with the peer (the throttled ones once a spell), never the token."""
        peer = context.peer()
        wait = self.throttle.failed(peer_host(peer))
        if not wait:
            log.info("%s from %s refused: %s", method, peer, why.partition(":")[0])
            context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
        if wait == self.throttle.first:
            log.warning("%s: more than %d failed token attempts within %g s; its failed attempts are refused "
                        "at once for a growing while", peer, self.throttle.limit, self.throttle.window)
        context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(int(wait * 1000))),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many failed token attempts from this address "
                      f"({why.partition(':')[0]}): wait {wait:g} s before trying again")

    def _wrap_unary(self, method: str, fn: Callable[[Any, grpc.ServicerContext], Any], caller: str | None
                    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            token, start = self._begin(method, context, caller)
            code = grpc.StatusCode.OK
            try:
                return fn(request, context)
            except Exception as exc:
                code = self._classify(method, context, exc)
                self._abort(context, code, exc)
            finally:
                self._end(method, context, start, code, token)

        return wrapped

    def _wrap_stream(self, method: str, fn: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
                     caller: str | None) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token, start = self._begin(method, context, caller)
            code = grpc.StatusCode.OK
            try:
                yield from self._sent(fn(request, context), context)
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = self._classify(method, context, exc)
                self._abort(context, code, exc)
            finally:
                self._end(method, context, start, code, token)

        return wrapped

    def _sent(self, responses: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """``responses``, each watched until its peer takes it (``SendWatch``); closed however the call ends,
        so whatever the handler holds (a slot, a reader) is released at once, not when it is collected."""
        sends, progress = self.sends, self.on_progress
        try:
            for response in responses:
                key = sends.arm(context) if sends is not None else None
                try:
                    yield response
                finally:
                    if key is not None and sends is not None:
                        sends.disarm(key)
                if progress is not None:
                    progress(context)
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()

    def _begin(self, method: str, context: grpc.ServicerContext, caller: str | None
               ) -> tuple[_Tokens, float]:
        who = caller or peer_host(context.peer())
        with self._idle:
            if self._draining:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another replica")
            limit = self.calls_per_caller
            if limit is not None and self._open[who] >= limit:  # refused before it holds anything
                context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, "5000"),))
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"this caller already has {self._open[who]} "
                              f"call(s) open (limit max_calls_per_caller={limit}); retry when one ends")
            self._active += 1
            self._open[who] += 1
        rid = _request_id(context)
        self.metrics.in_flight.labels(self.metrics.service, method).inc()
        return (request_id_var.set(rid), caller_var.set(who), who), time.perf_counter()

    def _end(
        self, method: str, context: grpc.ServicerContext, start: float, code: grpc.StatusCode,
        token: _Tokens,
    ) -> None:
        service = self.metrics.service
        if code is grpc.StatusCode.OK and not context.is_active():
            code = grpc.StatusCode.CANCELLED
        self.metrics.in_flight.labels(service, method).dec()
        self.metrics.latency.labels(service, method).observe(time.perf_counter() - start)
        self.metrics.requests.labels(service, method, code.name).inc()
        if code is not grpc.StatusCode.OK:
            self.metrics.errors.labels(service, method, code.name).inc()
        request_id_var.reset(token[0])
        caller_var.reset(token[1])
        with self._idle:
            self._active -= 1
            self._open[token[2]] -= 1
            if not self._open[token[2]]:
                del self._open[token[2]]
            self._idle.notify_all()

    def _classify(self, method: str, context: grpc.ServicerContext, exc: Exception) -> grpc.StatusCode:
        """The status an exception ends the call with; logs it once."""
        rid = request_id_var.get()
        already = context.code()
        if already not in (None, grpc.StatusCode.OK):
            return already  # the handler aborted the call itself
        if not context.is_active():
            return grpc.StatusCode.CANCELLED
        if isinstance(exc, AudioMemoryError):
            if exc.code is grpc.StatusCode.INTERNAL:
                log.error("%s %s INTERNAL: %s", rid, method, exc, exc_info=exc)
            else:
                log.info("%s %s %s: %s", rid, method, exc.code.name, exc)
            return exc.code
        if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
            log.info("%s %s %s from downstream: %s", rid, method, exc.code().name, exc.details())
            return exc.code()
        log.error("%s %s failed", rid, method, exc_info=exc)
        return grpc.StatusCode.INTERNAL

    def _abort(self, context: grpc.ServicerContext, code: grpc.StatusCode, exc: Exception) -> None:
        """End the call with ``code``; only project errors' own messages reach the caller."""
        already = context.code()
        if already not in (None, grpc.StatusCode.OK) or not context.is_active():
            raise exc
        rid = request_id_var.get()
        if isinstance(exc, AudioMemoryError) and code is not grpc.StatusCode.INTERNAL:
            message = str(exc)
        elif isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
            message = f"a downstream call failed: {exc.details()}"
        else:
            message = f"internal error (request id {rid})"
        trailers: tuple[tuple[str, str], ...] = ((REQUEST_ID_KEY, rid),)
        retry_after = getattr(exc, "retry_after_ms", None)
        if retry_after is not None:
            trailers += ((RETRY_PUSHBACK_KEY, str(retry_after)),)
        context.set_trailing_metadata(trailers)
        context.abort(code, message)
