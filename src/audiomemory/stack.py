"""The six services by kind, and the embedded stack that runs them all in one process.

``LocalStack`` starts the five model services and the orchestrator on 127.0.0.1 ephemeral ports,
wires the orchestrator to the others, and stops everything on exit. It is what ``audiomemory
generate`` does with no ``--orchestrator`` address, what ``audiomemory up`` keeps running, and what
the end-to-end tests use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from audiomemory.runtime.kinds import KINDS, MODEL_KINDS
from audiomemory.runtime.service import RunningService, ServiceDefinition, start_service

__all__ = ["KINDS", "MODEL_KINDS", "LocalStack", "definition"]

_DISTRIBUTIONS = {kind: f"audiomemory-{kind.replace('_', '-')}" for kind in KINDS}


def definition(kind: str) -> ServiceDefinition:
    """The ``ServiceDefinition`` a service package exports as ``audiomemory.<kind>.service.DEFINITION``."""
    if kind not in KINDS:
        raise ValueError(f"unknown service {kind!r}; known: {', '.join(KINDS)}")
    try:
        module = importlib.import_module(f"audiomemory.{kind}.service")
    except ImportError as exc:
        raise ImportError(f"service {kind!r} is not installed (pip install {_DISTRIBUTIONS[kind]}): {exc}") from exc
    return module.DEFINITION


class LocalStack:
    """All six services in this process, on 127.0.0.1 ephemeral ports."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, *, host: str = "127.0.0.1",
                 wait_timeout: float = 900.0) -> None:
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.host = host
        self.wait_timeout = wait_timeout
        self.services: dict[str, RunningService] = {}

    @property
    def address(self) -> str:
        return self.services["orchestrator"].address

    def start(self) -> LocalStack:
        try:
            for kind in MODEL_KINDS:
                self._start(kind, {})
            for kind in MODEL_KINDS:
                self.services[kind].wait_ready(self.wait_timeout)
            targets = {f"{kind}_target": self.services[kind].address for kind in MODEL_KINDS}
            self._start("orchestrator", targets)
            self.services["orchestrator"].wait_ready(self.wait_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, kind: str, extra: dict[str, Any]) -> None:
        d = definition(kind)
        config = d.config_class(**{"host": self.host, "port": 0, **self.overrides.get(kind, {}), **extra})
        self.services[kind] = start_service(d, config)

    def stop(self, grace: float = 1.0) -> None:
        for kind in reversed(KINDS):
            service = self.services.pop(kind, None)
            if service is not None:
                service.stop(grace)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
