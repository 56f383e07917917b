"""``audiomemory web``'s own rules: who may reach the page, and what never reaches the browser; an orchestrator
that is not there is a message on the page, not a broken one (one web server for the module's browser tests)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audiomemory.bench.certs import make_certs
from audiomemory.cli.main import cli

from .server import WebServer, free_port
from .test_page import upload, wait_status


def test_a_host_beyond_loopback_needs_a_login_or_an_explicit_no() -> None:
    result = CliRunner().invoke(cli, ["web", "--host", "0.0.0.0", "--orchestrator", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--auth USER:PASSWORD" in result.output and "--no-auth-i-know" in result.output


def test_a_login_without_a_password_is_refused_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["web", "--auth", "alice", "--orchestrator", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--auth" in result.output and "expected USER:PASSWORD" in result.output


TOKEN = "s3cret-orchestrator-token"


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """``audiomemory web`` with a login, TLS and a token, against an orchestrator that is not there."""
    folder = tmp_path_factory.mktemp("web")
    certs = make_certs(folder)
    web = WebServer(["--auth", "alice:wonderland", "--orchestrator", f"127.0.0.1:{free_port()}", "--tls-ca",
                     str(certs.ca), "--token", TOKEN, "--out", str(folder / "out")], folder / "web.log")
    try:
        yield web.wait_ready()
    finally:
        web.stop()


def log_in(page: Any, web: WebServer) -> None:
    page.goto(web.url)
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("wonderland")
    page.get_by_role("button", name="Login").click()


def test_the_page_asks_for_the_login_and_never_shows_the_orchestrators_token(page: Any, down: WebServer) -> None:
    log_in(page, down)
    wait_status(page, "the orchestrator cannot be reached: UNAVAILABLE", 60_000)
    assert TOKEN not in page.content()
    config = page.request.get(down.url + "config")  # the whole app as the browser gets it, logged in
    assert config.ok and TOKEN not in config.text()
    with pytest.raises(urllib.error.HTTPError) as refused:  # and nothing without the login
        urllib.request.urlopen(down.url + "config")
    assert refused.value.code == 401
    assert TOKEN not in down.output()


def test_an_orchestrator_that_is_down_is_a_message_on_the_page(page: Any, down: WebServer, song: Path) -> None:
    log_in(page, down)
    wait_status(page, "the orchestrator cannot be reached: UNAVAILABLE", 60_000)
    upload(page, song)
    page.locator("#generate").click()
    message = wait_status(page, "UNAVAILABLE: ", 60_000, start=True)  # the job's own status, not the load's
    assert "Connection refused" in message or "failed to connect" in message, message
    assert "Traceback" not in page.content()
    assert TOKEN not in page.content() and TOKEN not in down.output()
