"""The page against a running orchestrator (``--orchestrator``): Cancel stops the job where it runs, and
an orchestrator that is not there is a message on the page, not a broken one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audiomemory.runtime.service import RunningService
from audiomemory.stack import MODEL_KINDS, LocalStack

from .server import WebServer, free_port
from .test_page import open_page, set_number, upload, wait_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    overrides: dict[str, dict[str, Any]] = {kind: tiny(kind) for kind in MODEL_KINDS}
    overrides["audio_encoder"]["hop_seconds"] = 0.5  # full-size OpenL3 CNN: fewer frames keep the test fast
    overrides["orchestrator"] = {"cache_dir": tmp_path_factory.mktemp("cache")}  # no hit from another run
    with LocalStack(overrides) as running:
        yield running


def _cancelled(service: RunningService, method: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "audiomemory_requests_total", {"service": service.definition.kind, "method": method, "code": "CANCELLED"}
    )
    return value or 0.0


def test_cancel_stops_the_job_in_the_orchestrator_and_the_generator(
    stack: LocalStack, page: Any, song: Path, tmp_path: Path
) -> None:
    orchestrator, generator = stack.services["orchestrator"], stack.services["generator"]
    web = WebServer(["--orchestrator", stack.address, "--out", str(tmp_path / "out")], tmp_path / "web.log")
    try:
        web.wait_ready()
        open_page(page, web)
        assert not page.locator("#banner").is_visible()  # a deployment's profile is not known before an image
        upload(page, song)
        set_number(page, "steps", 150)  # long enough to be caught in the middle
        page.locator("#generate").click()
        wait_status(page, "generating (")
        page.locator("#cancel").click()
        wait_status(page, "CANCELLED", 30_000)
        deadline = time.monotonic() + 15
        while (_cancelled(orchestrator, "CreateImage") < 1 or _cancelled(generator, "Generate") < 1) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _cancelled(orchestrator, "CreateImage") == 1  # the orchestrator saw the job cancelled
        assert _cancelled(generator, "Generate") == 1  # and stopped the diffusion
        assert not list((tmp_path / "out").glob("*.png"))
        assert page.locator("#cancel").is_enabled()  # and the page keeps serving: the next job runs
        set_number(page, "steps", 2)
        set_number(page, "width", 64)
        set_number(page, "height", 64)
        page.locator("#generate").click()
        wait_status(page, "done in")
    finally:
        web.stop()


def test_an_orchestrator_that_is_down_is_a_message_on_the_page(page: Any, song: Path, tmp_path: Path) -> None:
    web = WebServer(["--orchestrator", f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "out")],
                    tmp_path / "web.log")
    try:
        web.wait_ready()
        page.goto(web.url)
        wait_status(page, "the orchestrator cannot be reached: UNAVAILABLE", 60_000)
        upload(page, song)
        page.locator("#generate").click()
        message = wait_status(page, "UNAVAILABLE: ", 60_000, start=True)  # the job's own status, not the load's
        assert "Connection refused" in message or "failed to connect" in message, message
        assert "Traceback" not in page.content()
    finally:
        web.stop()
