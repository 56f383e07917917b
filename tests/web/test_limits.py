"""The page against a running orchestrator (``--orchestrator``) whose ``Describe`` states a 1 MiB upload cap,
one job at once and one waiting: the page has the front door's limits, seen from outside without a browser,
and in a browser Cancel stops the job where it runs. One stack and one web server for the module: each test
counts from its own start."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audiomemory.client import Client
from audiomemory.runtime.service import RunningService
from audiomemory.stack import MODEL_KINDS, LocalStack

from .server import WebServer, make_song
from .test_page import open_page, set_number, upload, wait_status

pytestmark = pytest.mark.slow
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def stack(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    overrides: dict[str, dict[str, Any]] = {kind: tiny(kind) for kind in MODEL_KINDS}
    overrides["audio_encoder"]["hop_seconds"] = 0.5
    overrides["orchestrator"] = {"cache_dir": tmp_path_factory.mktemp("cache"), "max_upload_bytes": LIMIT,
                                 "concurrency": 1, "max_queue": 1}
    with LocalStack(overrides) as running:
        yield running


@pytest.fixture(scope="module")
def web(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, Path]]:
    folder = tmp_path_factory.mktemp("web")
    gradio = folder / "gradio"  # where Gradio keeps its uploads
    server = WebServer(["--orchestrator", stack.address, "--out", str(folder / "out")], folder / "web.log",
                       env={"GRADIO_TEMP_DIR": str(gradio), "TMPDIR": str(folder)})
    try:
        yield server.wait_ready(), gradio
    finally:
        server.stop()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _upload(url: str, size: int) -> httpx.Response | None:
    """POST ``size`` bytes as one multipart file to Gradio's upload route, streamed; None when the server
    hung up before the whole body was sent."""
    boundary = "am-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // (1 << 20)):
            yield b"\0" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        return httpx.post(f"{url}gradio_api/upload", content=body(), timeout=60,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return None


def test_an_upload_over_the_orchestrators_limit_is_refused_as_it_streams(web: tuple[WebServer, Path]) -> None:
    server, gradio = web
    small = _upload(server.url, LIMIT // 2)
    assert small is not None and small.status_code == 200  # under the limit: taken
    before = _peak_rss(server.process.pid)
    big = _upload(server.url, 48 * LIMIT)
    assert big is None or (big.status_code == 413 and f"{LIMIT} bytes" in big.text)
    assert _peak_rss(server.process.pid) - before < 16 * LIMIT  # never the whole 48 MiB in memory
    assert all(f.stat().st_size <= LIMIT for f in gradio.rglob("*") if f.is_file())  # nor on disk


def test_one_job_runs_one_waits_seeing_its_place_and_the_next_is_refused(
    web: tuple[WebServer, Path], tmp_path: Path
) -> None:
    from gradio_client import Client as GradioClient
    from gradio_client import handle_file
    from gradio_client.utils import Status

    server, _ = web
    with urllib.request.urlopen(server.url + "config") as response:
        config = json.load(response)
    assert config["max_file_size"] == LIMIT
    queued = [d["api_name"] for d in config["dependencies"] if d["queue"] is not False]
    assert sorted(queued) == ["generate", "reel"]  # jobs only: a cancel, a remix or a page load never waits behind them
    song = handle_file(str(make_song(tmp_path / "song.mp3", 2.0)))
    page = GradioClient(server.url, verbose=False)
    args = (song, "", False, 0.1, 1, 4, 64, 64, "")
    # The second is sent once the first runs: two sent at once can both reach Gradio's queue before either
    # starts, and then the second finds it full. The first has the steps to still run while the others come.
    jobs = [page.submit(*args[:5], 40, *args[6:], api_name="/generate")]
    deadline = time.monotonic() + 60
    while jobs[0].status().code not in (Status.PROCESSING, Status.PROGRESS, Status.ITERATING):
        assert time.monotonic() < deadline and not jobs[0].done(), jobs[0].status()
        time.sleep(0.02)
    jobs.append(page.submit(*args, api_name="/generate"))
    while (waiting := jobs[1].status()).code is not Status.IN_QUEUE:
        assert time.monotonic() < deadline and not jobs[0].done(), [job.status() for job in jobs]
        time.sleep(0.02)
    assert waiting.rank == 0  # the page shows "queue: 1/1" over the image
    third = page.submit(*args, api_name="/generate")
    with pytest.raises(Exception, match=r"[Qq]ueue is full"):
        third.result(timeout=60)
    assert all(str(job.result(timeout=120)[0]).startswith("done in") for job in jobs)


def test_a_jobs_upload_leaves_gradios_folder_and_the_status_names_no_path(
    web: tuple[WebServer, Path], stack: LocalStack, tmp_path: Path
) -> None:
    from gradio_client import Client as GradioClient
    from gradio_client import handle_file

    server, gradio = web
    song = make_song(tmp_path / "song.mp3", 1.0)
    page = GradioClient(server.url, verbose=False)
    status = page.predict(api_name="/describe")[-1]
    model_id = Client(stack.address).describe().generator.model.model_id
    assert status.startswith(f"ready: {model_id} on ") and "/" not in status
    result = page.predict(handle_file(str(song)), "", False, 0.1, 1, 1, 64, 64, "", api_name="/generate")
    assert str(result[0]).startswith("done in"), result[0]
    assert not [f for f in gradio.rglob("*") if f.is_file() and f.read_bytes() == song.read_bytes()]
    (work,) = server.log.parent.glob("audiomemory-web-*")
    kept = work / "songs" / hashlib.sha256(song.read_bytes()).hexdigest() / "song.mp3"
    assert kept.read_bytes() == song.read_bytes()  # one copy, the app's, kept for a remix


def _cancelled(service: RunningService, method: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "audiomemory_requests_total", {"service": service.definition.kind, "method": method, "code": "CANCELLED"}
    )
    return value or 0.0


def test_cancel_stops_the_job_in_the_orchestrator_and_the_generator(
    stack: LocalStack, web: tuple[WebServer, Path], page: Any, song: Path
) -> None:
    server, _ = web
    orchestrator, generator = stack.services["orchestrator"], stack.services["generator"]
    before = _cancelled(orchestrator, "CreateImage"), _cancelled(generator, "Generate")
    images = set((server.log.parent / "out").glob("*.png"))
    open_page(page, server)
    assert not page.locator("#banner").is_visible()  # a deployment's profile is not known before an image
    upload(page, song)
    set_number(page, "steps", 150)  # long enough to be caught in the middle
    page.locator("#generate").click()
    wait_status(page, "generating (")
    page.locator("#cancel").click()
    wait_status(page, "CANCELLED", 30_000)

    def counts() -> tuple[float, float]:
        return (_cancelled(orchestrator, "CreateImage") - before[0], _cancelled(generator, "Generate") - before[1])

    deadline = time.monotonic() + 15
    while min(counts()) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts() == (1, 1)  # the orchestrator saw the job cancelled, and stopped the diffusion
    assert set((server.log.parent / "out").glob("*.png")) == images  # no image from the cancelled job
    assert page.locator("#cancel").is_enabled()  # and the page keeps serving: the next job runs
    set_number(page, "steps", 2)
    set_number(page, "width", 64)
    set_number(page, "height", 64)
    page.locator("#generate").click()
    wait_status(page, "done in")
