"""``audiomemory web``'s own rules: who may reach the page, and what never reaches the browser."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audiomemory.bench.certs import make_certs
from audiomemory.cli.main import cli

from .server import WebServer, free_port
from .test_page import wait_status


def test_a_host_beyond_loopback_needs_a_login_or_an_explicit_no() -> None:
    result = CliRunner().invoke(cli, ["web", "--host", "0.0.0.0", "--orchestrator", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--auth USER:PASSWORD" in result.output and "--no-auth-i-know" in result.output


def test_a_login_without_a_password_is_refused_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["web", "--auth", "alice", "--orchestrator", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "--auth" in result.output and "expected USER:PASSWORD" in result.output


def test_the_page_asks_for_the_login_and_never_shows_the_orchestrators_token(page: Any, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    token = "s3cret-orchestrator-token"
    web = WebServer(["--auth", "alice:wonderland", "--orchestrator", f"127.0.0.1:{free_port()}", "--tls-ca",
                     str(certs.ca), "--token", token, "--out", str(tmp_path / "out")], tmp_path / "web.log")
    try:
        web.wait_ready()
        page.goto(web.url)
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill("wonderland")
        page.get_by_role("button", name="Login").click()
        wait_status(page, "the orchestrator cannot be reached: UNAVAILABLE", 60_000)
        assert token not in page.content()
        config = page.request.get(web.url + "config")  # the whole app as the browser gets it, logged in
        assert config.ok and token not in config.text()
        with pytest.raises(urllib.error.HTTPError) as refused:  # and nothing without the login
            urllib.request.urlopen(web.url + "config")
        assert refused.value.code == 401
        assert token not in web.output()
    finally:
        web.stop()
