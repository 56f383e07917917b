"""Small helpers the service tests of several areas share (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.v1 import common_pb2

#: A pin no replica of the tests runs.
OTHER_PIN = common_pb2.Pin(identity="f" * 32, describe="other-backend/other-model@0123456789ab (float16)")


def served(call: Any) -> Any:
    """Read a model call's first message, which is its ``Served`` header (asserted), and return the header."""
    first = next(call)
    assert first.WhichOneof("item") == "served", f"the first message is {first.WhichOneof('item')!r}, not served"
    return first.served


def refused_before_any_message(call: Any, own_identity: str) -> None:
    """``call`` (pinned to ``OTHER_PIN``) ends in FAILED_PRECONDITION before sending a single message, and the
    refusal names both the identity asked for and the replica's own."""
    got = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in call:
            got.append(response.WhichOneof("item"))
    assert got == [], "the refusal came after the response started: a retry policy would not move the call"
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    details = caught.value.details() or ""
    assert OTHER_PIN.identity in details and own_identity in details, details
    assert "other-backend/other-model" in details


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
