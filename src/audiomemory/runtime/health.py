"""``grpc.health.v1`` for every service: ``Check`` only.

grpcio's own ``HealthServicer`` serves ``Watch`` without a handler thread, so ``maximum_concurrent_rpcs``
never counts a watch, and it keeps each watched name (up to the message limit) in a dict for as long as
the process lives: hundreds of open watches with long names held gigabytes (RELIABILITY.md, threat
model). Nothing here needs ``Watch``: Kubernetes' gRPC probes, ``audiomemory`` and the orchestrator poll
``Check``, and a client doing gRPC client-side health checking treats UNIMPLEMENTED as "no health
checking" (gRFC A17). So ``Watch`` is refused, and ``Check`` holds nothing after it answers.
"""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HEALTH_SERVICE = "grpc.health.v1.Health"
#: Longest service name a Check may ask about (ours are ~30 characters).
MAX_NAME_CHARS = 200
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health(health_pb2_grpc.HealthServicer):
    """Statuses by service name ("" = the server as a whole), answered by ``Check``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {}
        self._final = False

    def set(self, service: str, status: int) -> None:
        with self._lock:
            if not self._final:
                self._status[service] = status

    def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every name from now on, whatever is set later."""
        with self._lock:
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._final = True

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
              ) -> health_pb2.HealthCheckResponse:
        name = request.service
        if len(name) > MAX_NAME_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"service: at most {MAX_NAME_CHARS} characters, got {len(name)}")
        with self._lock:
            status = self._status.get(name)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service name")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "this server answers grpc.health.v1 Check only: poll Check (as Kubernetes' probes do)")
