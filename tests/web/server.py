"""``audiomemory web`` as a user starts it, in its own process on a free port, and a song to give it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebServer:
    """``audiomemory web ARGS`` in its own process on a free port; its output goes to ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        command = [sys.executable, "-m", "audiomemory.cli.main", "web", "--port", str(self.port), *args]
        # PYTHONPATH and the offline switches pass through; an embedded orchestrator's audio cache is the
        # test's own (a cache hit from another run would skip the stages a test watches).
        env = {**os.environ, "AUDIOMEMORY_ORCHESTRATOR_CACHE_DIR": str(log.parent / "cache"), **(env or {})}
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def wait_ready(self, timeout: float = 240) -> WebServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"audiomemory web exited {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"audiomemory web did not serve within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_song(path: Path, seconds: float) -> Path:
    """The example song's synthesiser, ``seconds`` long, as an MP3 at ``path``."""
    spec = importlib.util.spec_from_file_location("make_song", ROOT / "examples" / "make_song.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_mp3(path, module.song(seconds=seconds))
    return path
