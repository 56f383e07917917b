"""Small helpers the service tests of several areas share (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health(channel: grpc.Channel, service: str) -> int:
    """The ``grpc.health.v1`` status of ``service`` ("" = the whole server)."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


class GatedLoad:
    """Mix in before a real backend: its ``load`` waits until the test sets ``release``, then loads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def load(self) -> None:
        if not self.release.wait(30):
            raise TimeoutError("test never released the load")
        super().load()  # type: ignore[misc]
