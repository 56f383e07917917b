"""Fixtures for the reliability tests: the tiny services on real gRPC, and the figures they report.

The model services and the orchestrator in front of them are the orchestrator tests' own fixtures
(imported, so a whole-suite run and this folder start them the same way). Tests here record what they
ran in ``FIGURES``; the session ends with one JSON line per figure (``{"catalogue_cases": N}``,
``{"fuzz_examples": {...}, "total": N}``), which ``make reliability`` quotes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from helpers import health
from orchestrator.conftest import models, orchestrator  # noqa: F401  (fixtures, reused as they are)

from audiomemory.runtime.service import RunningService

# What the reliability tests ran, by figure and target; printed once at the end of the session.
FIGURES: dict[str, Counter[str]] = {"catalogue": Counter(), "fuzz": Counter()}

KINDS = ("separator", "audio_encoder", "text_encoder", "generator", "orchestrator")


@pytest.fixture(scope="module")
def channels(
    models: dict[str, RunningService],  # noqa: F811
    orchestrator: RunningService,  # noqa: F811
) -> Iterator[dict[str, grpc.Channel]]:
    """One channel per service kind: the four tiny model services and an orchestrator in front of them
    (its limits: 2 MB uploads, 8 s songs)."""
    addresses = {kind: svc.address for kind, svc in models.items()} | {"orchestrator": orchestrator.address}
    opened = {kind: grpc.insecure_channel(addresses[kind]) for kind in KINDS}
    yield opened
    for channel in opened.values():
        channel.close()


def assert_serving(channel: grpc.Channel) -> None:
    """The server behind ``channel`` still answers health SERVING."""
    assert health(channel, "") == health_pb2.HealthCheckResponse.SERVING


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    catalogue, fuzz = FIGURES["catalogue"], FIGURES["fuzz"]
    if catalogue:
        terminalreporter.write_line(json.dumps({"catalogue_cases": catalogue.total()}))
    if fuzz:
        terminalreporter.write_line(json.dumps({"fuzz_examples": dict(sorted(fuzz.items())), "total": fuzz.total()}))
