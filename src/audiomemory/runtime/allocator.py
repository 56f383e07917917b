"""Which heap allocator this process runs on, and what to do when it is glibc's malloc.

PyTorch on CPU allocates and frees megabytes of activations per layer. glibc malloc hands much of
that back to the kernel and faults it in again on the next call. Measured on the 2-core sandbox
(BENCHMARKS.md, "Heap allocator"): an SD 1.5 UNet call at 256x256 took ~464 thousand minor page
faults and 0.64 s of system time under glibc, under a thousand faults with tcmalloc, and 22 % less
time. A whole job through the services took 27 % less time, and their overhead over calling the
same models in one thread's code fell from 15 % to none (``make bench-e2e``: 1.155 -> 0.985).

The allocator can only be chosen before a process starts (``LD_PRELOAD``): the images preload
tcmalloc, ``make`` does when the library is installed, and the ``audiomemory`` commands that run
models (``serve``, ``up``, ``generate``, ``reproduce``, ``web``) start themselves again with it
preloaded when it is installed and not loaded (``reexec_with_tcmalloc``; ``AUDIOMEMORY_ALLOCATOR=glibc``
keeps glibc). Besides speed, glibc's per-thread arenas keep freed song-sized buffers: ``up`` with 8
callers of an 18-minute song peaked 1082 MB above 2 callers under glibc, 475 MB under tcmalloc
(RELIABILITY.md). A service that loaded a model onto the CPU under glibc malloc says so once in its
log, with the fix.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("audiomemory.allocator")

#: Allocators recognised by their shared object in ``/proc/self/maps`` (``libtcmalloc_minimal.so.4``, ...).
KNOWN = ("tcmalloc", "jemalloc", "mimalloc")

TIP = (
    "Model calls on CPU take about 30 % longer under glibc malloc (page faults on every call); "
    "preload tcmalloc: LD_PRELOAD=libtcmalloc_minimal.so.4 (Debian/Ubuntu package libtcmalloc-minimal4)"
)

#: Where Debian/Ubuntu (any architecture), Fedora and source builds put tcmalloc (the Makefile looks there too).
TCMALLOC_GLOBS = ("/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib64/libtcmalloc_minimal.so.4",
                  "/usr/local/lib/libtcmalloc_minimal.so.4")

_advised = False
_lock = threading.Lock()


def heap_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """``tcmalloc``, ``jemalloc`` or ``mimalloc`` when one is mapped into this process, else
    ``glibc`` (or ``system`` on another C library, or where ``/proc`` cannot be read)."""
    try:
        text = maps.read_text()
    except OSError:
        return "system"
    for name in KNOWN:
        if f"/lib{name}" in text:
            return name
    return "glibc" if platform.libc_ver()[0] == "glibc" else "system"


def find_tcmalloc() -> Path | None:
    """The installed ``libtcmalloc_minimal.so.4`` to preload, or None."""
    for pattern in TCMALLOC_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    return None


def advise(kind: str, device: str) -> None:
    """Log the allocator once per process; a warning with the fix when a model runs on CPU under glibc."""
    global _advised
    name = heap_allocator()
    with _lock:
        warn = name == "glibc" and device.startswith("cpu") and not _advised
        _advised = _advised or warn
    if warn:
        log.warning("%s: model on %s under glibc malloc. %s", kind, device, TIP)
    else:
        log.info("%s: heap allocator %s", kind, name)


#: Set in the environment of the process ``reexec_with_tcmalloc`` starts, so it starts only once.
REEXEC_MARK = "AUDIOMEMORY_ALLOCATOR_REEXEC"


def reexec_with_tcmalloc(argv: Sequence[str]) -> None:
    """Replace this process by the same ``audiomemory`` command with tcmalloc preloaded, when tcmalloc is
    installed, not loaded yet, and ``AUDIOMEMORY_ALLOCATOR`` is not ``glibc``; else return."""
    if os.environ.get(REEXEC_MARK) or os.environ.get("AUDIOMEMORY_ALLOCATOR", "").lower() == "glibc":
        return
    if heap_allocator() != "glibc" or (library := find_tcmalloc()) is None:
        return
    preload = " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD", "")]))
    env = {**os.environ, "LD_PRELOAD": preload, REEXEC_MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "audiomemory.cli.main", *argv], env)
