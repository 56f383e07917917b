"""The project's exception hierarchy.

Code anywhere inside an RPC raises one of these; the interceptor in ``interceptor.py`` maps
each to its gRPC status code and logs it once with the request id. Messages name the field,
the limit and what came — use ``describe()`` for values so a payload is never echoed whole.
"""

from __future__ import annotations

from typing import Any

import grpc


class AudioMemoryError(Exception):
    """Base class; unexpected failures map to INTERNAL without leaking details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(AudioMemoryError):
    """The request is malformed: a field is missing, out of range or inconsistent."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(AudioMemoryError):
    """The system is not in a state to do this, e.g. two services' models do not fit together."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelUnavailable(FailedPrecondition):
    """Model weights are missing and cannot be fetched (offline)."""


class ResourceExhausted(AudioMemoryError):
    """A size limit was passed or the server is full (``retry_after_ms``: when trying again makes sense,
    sent as gRPC's ``grpc-retry-pushback-ms`` trailer, which a client's retry policy honours)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(AudioMemoryError):
    """A service (this one while loading, or a downstream one) cannot answer now."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(AudioMemoryError):
    """The caller went away; work stopped."""

    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(AudioMemoryError):
    """The caller's deadline passed before the work finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnknownBackend(AudioMemoryError):
    """Configuration names a backend that is not installed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


_MAX_REPR = 60


def describe(value: Any) -> str:
    """A short, safe description of ``value`` for error messages (never the whole payload)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    if isinstance(value, str):
        if len(value) > _MAX_REPR:
            return f"a string of {len(value)} characters"
        return repr(value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)} and dtype {getattr(value, 'dtype', '?')}"
    text = repr(value)
    if len(text) > _MAX_REPR:
        return f"a {type(value).__name__} ({len(text)} characters when printed)"
    return text


def shorten(exc: BaseException, limit: int = 200) -> str:
    """A library's error message, cut to ``limit`` characters (they can quote whole paths or states)."""
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 1] + "…"
