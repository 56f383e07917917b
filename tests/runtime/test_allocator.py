"""Which heap allocator a process runs on, and the advice a model service logs under glibc malloc."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audiomemory.runtime import allocator
from audiomemory.runtime.allocator import find_tcmalloc, heap_allocator
from audiomemory.runtime.service import start_service
from audiomemory.stack import definition

GLIBC = platform.libc_ver()[0] == "glibc"
TCMALLOC = find_tcmalloc()


def maps_file(tmp_path: Path, *libraries: str) -> Path:
    lines = [f"7f00{i:08x}-7f01{i:08x} r-xp 00000000 08:01 {i} {lib}" for i, lib in enumerate(libraries)]
    path = tmp_path / "maps"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("library", "expected"),
    [
        ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10", "tcmalloc"),
        ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
        ("/opt/lib/libmimalloc.so.2.1", "mimalloc"),
    ],
)
def test_a_mapped_allocator_library_is_named(tmp_path: Path, library: str, expected: str) -> None:
    maps = maps_file(tmp_path, "/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libc.so.6", library)
    assert heap_allocator(maps) == expected


def test_without_one_it_is_the_c_librarys_malloc(tmp_path: Path) -> None:
    maps = maps_file(tmp_path, "/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libc.so.6")
    assert heap_allocator(maps) == ("glibc" if GLIBC else "system")
    assert heap_allocator(tmp_path / "missing") == "system"


def run_reporting(env: dict[str, str]) -> str:
    code = "from audiomemory.runtime.allocator import heap_allocator; print(heap_allocator())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not GLIBC or not Path("/proc/self/maps").exists(), reason="needs Linux with glibc")
def test_a_process_reports_the_allocator_it_was_started_with() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert run_reporting(env) == "glibc"
    if TCMALLOC is None:
        pytest.skip("libtcmalloc-minimal4 is not installed: the preloaded case cannot run here")
    assert run_reporting({**env, "LD_PRELOAD": str(TCMALLOC)}) == "tcmalloc"


@pytest.mark.parametrize(
    ("name", "device", "warned"),
    [("glibc", "cpu", True), ("tcmalloc", "cpu", False), ("jemalloc", "cpu", False), ("glibc", "cuda:0", False)],
)
def test_the_fix_is_advised_once_and_only_for_a_cpu_model_under_glibc(
    name: str, device: str, warned: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both branches on any host: the allocator this process runs on is replaced by each case's.
    monkeypatch.setattr(allocator, "_advised", False)
    monkeypatch.setattr(allocator, "heap_allocator", lambda: name)
    with caplog.at_level(logging.INFO, logger="audiomemory.allocator"):
        allocator.advise("separator", device)
        allocator.advise("generator", device)
    first, second = (r for r in caplog.records if r.name == "audiomemory.allocator")
    assert (first.levelno == logging.WARNING) is warned
    if warned:
        message = first.getMessage()
        assert "LD_PRELOAD=libtcmalloc_minimal.so.4" in message and "libtcmalloc-minimal4" in message
    else:
        assert first.getMessage() == f"separator: heap allocator {name}"
    assert second.levelno == logging.INFO and second.getMessage() == f"generator: heap allocator {name}"


def test_a_model_service_on_cpu_logs_its_allocator_and_the_fix_under_glibc(
    tiny: Callable[[str], dict[str, Any]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(allocator, "_advised", False)
    d = definition("text_encoder")
    with caplog.at_level(logging.INFO, logger="audiomemory.allocator"):
        for _ in range(2):  # the second model in the same process is not warned about again
            svc = start_service(d, d.config_class(port=0, device="cpu", **tiny("text_encoder")), wait=True)
            svc.stop(0)
    records = [r for r in caplog.records if r.name == "audiomemory.allocator"]
    assert len(records) == 2, [r.getMessage() for r in records]
    assert records[1].levelno == logging.INFO and records[1].getMessage().endswith(f"heap allocator {heap_allocator()}")
    message = records[0].getMessage()
    assert message.startswith("text_encoder: ")
    if heap_allocator() == "glibc":
        assert records[0].levelno == logging.WARNING
        assert "LD_PRELOAD=libtcmalloc_minimal.so.4" in message and "libtcmalloc-minimal4" in message
    else:
        assert records[0].levelno == logging.INFO
        assert message.endswith(f"heap allocator {heap_allocator()}")


@pytest.mark.skipif(TCMALLOC is None or not GLIBC, reason="tcmalloc is not installed (make system installs it)")
@pytest.mark.parametrize(("choice", "expected"),
                         [("", "tcmalloc"), pytest.param("glibc", "glibc", marks=pytest.mark.long)])
def test_a_model_command_starts_again_with_tcmalloc_unless_told_to_keep_glibc(
    tiny_clip: dict[str, Any], choice: str, expected: str
) -> None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in tiny_clip.items()]
    env = {**os.environ, "AUDIOMEMORY_ALLOCATOR": choice}
    env.pop("LD_PRELOAD", None)
    env.pop(allocator.REEXEC_MARK, None)
    proc = subprocess.Popen([sys.executable, "-m", "audiomemory.cli.main", "serve", "text_encoder", "--port=0",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        # execve keeps the process id: the server that listens is the process started here.
        assert heap_allocator(Path(f"/proc/{proc.pid}/maps")) == expected
    finally:
        proc.terminate()
        proc.wait(30)


_SHOW_POLICY = """
import os, sys
from audiomemory.cli import main as cli_main
torch_early = "torch" in sys.modules
sys.argv = ["audiomemory", *sys.argv[1:]]
try:
    cli_main.main()
except SystemExit:
    pass
print("RESULT", os.environ.get("OMP_WAIT_POLICY"), torch_early)
"""


@pytest.mark.parametrize(
    ("argv", "preset", "expected"),
    [
        (["up", "--help"], None, "PASSIVE"),  # every service in one process: the models share the cores
        (["generate", "--help"], None, "PASSIVE"),
        (["serve", "--help"], None, "None"),  # one service alone on its cores keeps spinning
        (["describe", "--help"], None, "None"),
        (["up", "--help"], "ACTIVE", "ACTIVE"),  # the environment's own choice wins
    ],
)
def test_commands_hosting_every_service_make_openmp_threads_wait_passively(
    argv: list[str], preset: str | None, expected: str
) -> None:
    env = {**os.environ, "AUDIOMEMORY_ALLOCATOR": "glibc"}  # no re-exec: read this process's environment
    env.pop("OMP_WAIT_POLICY", None)
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", _SHOW_POLICY, *argv], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    result = next(line for line in out.splitlines() if line.startswith("RESULT"))
    # libgomp reads the policy once, when torch loads it: torch must not be imported before main() sets it.
    assert result == f"RESULT {expected} False"
