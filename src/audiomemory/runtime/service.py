"""Server scaffolding shared by every service.

``start_service(definition, config)`` builds a gRPC server hosting one servicer plus
``grpc.health.v1`` ``Check`` (NOT_SERVING until the backend has loaded, for the server and the service;
``health.py``), server reflection, the interceptor (tokens, errors, metrics, and every streaming call
held to its peer's pace: ``pacing.py``), explicit message-size limits, gRPC's own connection limits
(streams per connection, ping enforcement, keepalive, idle connections) and a bound on RPCs in flight
no higher than the handler threads; it binds (port 0 picks a free port), starts, and loads the backend in a background
thread. ``serve_forever`` is what a container runs: it drains in-flight calls on SIGTERM.

Model work is bounded by a ``Gate`` (``gate.py``): ``concurrency`` calls run, ``max_queue`` wait in
arrival order, the next one gets RESOURCE_EXHAUSTED. Handlers run on the server's thread pool, never
on an event loop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from audiomemory.runtime import allocator
from audiomemory.runtime.backend import Backend, Loadable, resolve_device
from audiomemory.runtime.config import ServiceConfig
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.health import HEALTH_SERVICE, NOT_SERVING, SERVING, Health
from audiomemory.runtime.interceptor import ServiceInterceptor
from audiomemory.runtime.metrics import Metrics
from audiomemory.runtime.pacing import ReadPolicy, SendWatch
from audiomemory.runtime.precision import choose_backend
from audiomemory.runtime.registry import installed_backends, load_backend
from audiomemory.runtime.security import TokenFile, server_credentials

log = logging.getLogger("audiomemory.service")


# One model load at a time per process: transformers/diffusers build models under accelerate's
# init_empty_weights, which patches torch.nn.Module globally (not per thread), so a model built
# concurrently in another thread (the embedded stack loads four) would get meta tensors.
_LOAD_LOCK = threading.Lock()

AddServicer = Callable[[grpc.Server, Any, Gate, Any], None]


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service package exports so the runtime can host it."""

    kind: str                      # "separator", ... (entry-point group suffix, metrics label)
    grpc_service_name: str         # full name, e.g. "audiomemory.v1.Separator"
    config_class: type[ServiceConfig]
    add_servicer: AddServicer      # (server, backend, gate, config) -> None
    # Builds what the service loads before it serves; default: the registered model backend named by
    # ``config.backend`` (entry point group ``audiomemory.<kind>``; ``runtime/registry.py``). The
    # orchestrator has no model: its ``Downstream`` (connections to the model services) is loaded instead.
    create_backend: Callable[[Any], Loadable] | None = None

    def make_backend(self, config: ServiceConfig) -> Loadable:
        if self.create_backend is not None:
            return self.create_backend(config)
        name = self.backend_name(config)
        if name != config.backend:
            log.info("%s: backend %s runs %s on this machine", self.kind, config.backend, name)
            config = config.model_copy(update={"backend": name})
        return self.make_backend_class(name)(config)

    def backend_name(self, config: ServiceConfig, flags: frozenset[str] | None = None) -> str:
        """The backend ``config`` names, ``auto`` resolved for its device and a CPU with ``flags`` (this one's
        by default; ``runtime/precision.choose_backend``)."""
        if config.backend != "auto":
            return config.backend
        default = self.config_class.model_fields["backend"].default
        device = resolve_device(config.device).type
        return choose_backend(self.kind, "auto", device, installed_backends(self.kind), default, flags)

    def make_backend_class(self, name: str) -> type[Backend]:
        """The registered backend class ``name`` for this kind of service."""
        return load_backend(self.kind, name)


class RunningService:
    """A started server. ``stop()`` drains; ``wait_ready()`` blocks until the model has loaded."""

    def __init__(
        self, definition: ServiceDefinition, config: ServiceConfig, backend: Loadable, server: grpc.Server,
        port: int, gate: Gate, health_servicer: Health, interceptor: ServiceInterceptor,
    ) -> None:
        self.definition = definition
        self.config = config
        self.backend = backend
        self.server = server
        self.port = port
        self.gate = gate
        self.health = health_servicer
        self.interceptor = interceptor
        self.metrics = interceptor.metrics
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._health_server: grpc.Server | None = None
        self._http: Any = None
        self._stopped = threading.Event()
        self._loader: threading.Thread | None = None

    @property
    def address(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def _set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ("", self.definition.grpc_service_name):
            self.health.set(name, status)

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            with _LOAD_LOCK if self.backend.exclusive_load else contextlib.nullcontext():
                self.backend.load()
        except Exception as exc:
            self.gate.load_error = str(exc) or type(exc).__name__
            log.error("%s: %s failed to load: %s", self.definition.kind, type(self.backend).__name__, exc)
            return
        if self._stopped.is_set():
            return
        if isinstance(self.backend, Backend):  # a model was loaded: say which heap allocator it runs under
            allocator.advise(self.definition.kind, self.backend.describe().device)
        self.gate.ready.set()
        self.metrics.ready.labels(self.definition.kind).set(1)
        self._set_serving(True)
        log.info("%s ready on %s (loaded in %.1f s)", self.definition.kind, self.address, time.perf_counter() - start)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until loaded; raise the load error, or TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.gate.ready.wait(0.02):
            if self.gate.load_error is not None:
                raise FailedPrecondition(f"{self.definition.kind} failed to load: {self.gate.load_error}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.definition.kind} did not load within {timeout} s")

    def request_count(self, method: str | None = None) -> int:
        return self.metrics.request_count(method)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        # Drain ourselves rather than through server.stop(grace): new calls get UNAVAILABLE at once (a
        # client's retry policy moves them to another replica) while in-flight ones finish. (grpcio's own
        # grace period was seen here to starve Python handler threads until the grace ran out.)
        drained = self.interceptor.drain(self.config.grace_seconds if grace is None else grace)
        if not drained:
            log.warning("%s: grace period over, cancelling the calls still in flight", self.definition.kind)
        # Handlers have returned; a short grace lets their last messages and statuses reach the callers.
        self.server.stop(5.0 if drained else 0).wait()
        if self._health_server is not None:
            self._health_server.stop(0).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.backend.close()
        if self._loader is not None and self._loader is not threading.current_thread():
            # A load still running would race the caller's next imports (lazy modules such as diffusers'
            # are not safe to import from two threads at once): give it a bounded time to end.
            self._loader.join(timeout=60)


#: gRPC's own limits on a connection (``_server_options``): how often a peer may ping us when no call is
#: open (more often, twice, and the connection is closed: ping floods), how often we ping an idle peer to
#: find connections whose peer is gone, and how large a call's metadata may be.
MIN_PEER_PING_MS = 60_000
KEEPALIVE_MS = 120_000
KEEPALIVE_TIMEOUT_MS = 20_000
MAX_METADATA_BYTES = 16 * 1024
#: The health-only port's limits: a Check is a few dozen bytes; probes come one at a time.
HEALTH_MESSAGE_BYTES = 1024
HEALTH_CALLS = 4


def _connection_limits(streams: int, idle_seconds: float | None) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_concurrent_streams", streams),  # calls open at once on one connection
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PEER_PING_MS),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
    ]
    if idle_seconds is not None:
        options.append(("grpc.max_connection_idle_ms", int(idle_seconds * 1000)))
    return options


def _server_options(config: ServiceConfig) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *_connection_limits(config.max_concurrent_rpcs, config.max_connection_idle_seconds),
    ]
    if config.max_connection_age_seconds is not None:
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.grace_seconds * 1000)),
        ]
    return options


def start_service(
    definition: ServiceDefinition,
    config: ServiceConfig,
    backend: Loadable | None = None,
    *,
    wait: bool = False,
    wait_timeout: float | None = 600.0,
) -> RunningService:
    """Build, bind and start a service; its backend loads in the background (``wait`` to block)."""
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    if backend is None:
        backend = definition.make_backend(config)
    gate = Gate(config.concurrency, config.max_queue, per_owner=config.caller_share)
    gate.track_progress()  # queued calls hear of the line only while the calls holding slots make progress
    interceptor = _interceptor(definition.kind, config, gate)
    threads = config.concurrency + config.max_queue + config.max_workers
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"am-{definition.kind}"),
        interceptors=[interceptor],
        options=_server_options(config),
        # Never more calls than threads: a call past them would wait unseen in the pool's queue (health and
        # Describe with it) instead of being refused with RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=min(config.max_concurrent_rpcs, threads),
    )
    definition.add_servicer(server, backend, gate, config)
    health_servicer = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (definition.grpc_service_name, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    port = _bind(server, config, definition.kind)
    running = RunningService(definition, config, backend, server, port, gate, health_servicer, interceptor)
    running._set_serving(False)
    server.start()
    if config.health_port is not None:
        running._health_server, running.health_port = _health_only(config, health_servicer)
    if config.metrics_port is not None:
        http, _ = start_http_server(config.metrics_port, addr=config.host, registry=interceptor.metrics.registry)
        running._http = http
        running.metrics_port = http.server_port
    running._loader = threading.Thread(target=running._load, name=f"am-{definition.kind}-load", daemon=True)
    running._loader.start()
    if wait:
        running.wait_ready(wait_timeout)
    return running


def _interceptor(kind: str, config: ServiceConfig, gate: Gate) -> ServiceInterceptor:
    """Tokens, errors, metrics, and every streaming call held to its peer's pace (``pacing.py``)."""
    return ServiceInterceptor(
        Metrics(kind), TokenFile(config.auth_tokens) if config.auth_tokens else None,
        reads=ReadPolicy(config.min_request_rate, config.request_window_seconds),
        sends=SendWatch(config.send_timeout_seconds, kind), on_progress=gate.progressed,
        calls_per_caller=config.max_calls_per_caller,
    )


def _bind(server: grpc.Server, config: ServiceConfig, kind: str) -> int:
    """Bind the service's port, TLS when configured; the port bound."""
    if config.tls_cert is not None and config.tls_key is not None:
        credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        port = server.add_secure_port(config.address(), credentials)
    else:
        port = server.add_insecure_port(config.address())
    if port == 0:
        raise OSError(f"{kind}: could not bind {config.address()}")
    return port


def _health_only(config: ServiceConfig, servicer: Health) -> tuple[grpc.Server, int]:
    """A plaintext server on ``health_port`` with the service's health servicer (``Check``) and nothing else,
    under limits of its own: tiny messages, a few calls at once, idle connections closed."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="am-health"),
        options=[("grpc.max_receive_message_length", HEALTH_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", HEALTH_MESSAGE_BYTES),
                 *_connection_limits(HEALTH_CALLS, 60.0)],
        maximum_concurrent_rpcs=HEALTH_CALLS,
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(config.address(config.health_port))
    if port == 0:
        raise OSError(f"could not bind the health port {config.address(config.health_port)}")
    server.start()
    return server, port


def serve_forever(definition: ServiceDefinition, config: ServiceConfig) -> None:
    """Run one service until SIGTERM/SIGINT, then drain in-flight calls for ``grace_seconds``."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    running = start_service(definition, config)
    metrics = f", metrics on :{running.metrics_port}" if running.metrics_port is not None else ""
    log.info("%s listening on %s%s", definition.kind, running.address, metrics)
    print(f"{definition.kind} listening on {running.address}{metrics}", flush=True)
    stop.wait()
    log.info("%s: draining (grace %.0f s)", definition.kind, config.grace_seconds)
    running.stop()
