"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against
``audiomemory web`` started as a user starts it (its own process, a free port).

Chromium comes from the system's packages (``make test`` installs ``chromium`` and ``chromium-driver``
where it can: scripts/install_system_packages.sh); Playwright's own browser download is not used.
Without a browser the tests skip, saying why; under ``CI=true`` a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import make_song

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's Chromium executable."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    _missing("no Chromium on this machine (as root: apt-get install chromium chromium-driver, or `make system`)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    """A headless Chromium driven by Playwright (pointed at the system's executable)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1500}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_song(tmp_path_factory.mktemp("song") / "song.mp3", 2.0)
