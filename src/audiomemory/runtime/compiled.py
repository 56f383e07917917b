"""The compiled-model cache the OpenVINO backends share (the generator's UNet, the separator's htdemucs, the audio
encoder's CNN), and the one way they compile for the CPU (``cpu_compiler``).

A converted graph (OpenVINO IR: ``.xml`` + ``.bin``) is kept under

    <cache>/<weights' revision>/<runtime versions>/<name>.xml

— ``cache`` the config's ``compiled_cache`` or ``audiomemory-openvino`` beside the hub's weights (the models
volume, which ``models pull`` writes) — so another revision, another runtime or another shape is another entry
and a second start reads what the first converted. Files are written whole or not at all (pid-unique partial
names, the ``.xml`` last), one converter at a time per folder (a file lock: replicas starting together on one
volume convert once); a folder that cannot be written (a read-only volume) is only read.

Nothing here chooses a path from a request: names come from the configuration and the backend's own shapes.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from audiomemory.runtime.hub import hf_cache_dir

# oneTBB (OpenVINO's threads) dlopens its hwloc binding with RTLD_DEEPBIND unless this is set; with tcmalloc
# preloaded (the CLI, the images), hwloc then frees through glibc what tcmalloc allocated: "free(): invalid
# pointer" as an IR is read (reproduced here; oneTBB #1645/#1636). Read when OpenVINO first starts its threads,
# so every module that imports OpenVINO imports this one first.
os.environ.setdefault("TBB_ENABLE_SANITIZERS", "1")

#: Longest a start-up waits for another process converting into the same folder (SD 1.5's UNet: ~20 s here).
CONVERT_LOCK_S = 1800.0


def cache_folder(setting: str, revision: str, *packages: str) -> Path:
    """``<setting or the default>/<revision>/<ov-…-torch-…-<package>-…>``: the folder a model's graphs live in."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", revision)  # a hub commit, or sha256:<hash> of a folder
    return Path(setting or hf_cache_dir() / "audiomemory-openvino") / safe / runtime_versions(*packages)


def runtime_versions(*packages: str) -> str:
    """The versions a converted graph depends on, as one path component (OpenVINO, torch, then ``packages``)."""
    import openvino

    parts = [f"ov-{openvino.get_version().split('-')[0]}"]
    for package in ("torch", *packages):
        parts.append(f"{package}-{version(package).split('+')[0]}")
    return "-".join(parts)


def writable(folder: Path) -> bool:
    """Whether ``folder`` can be created and written (a read-only models volume: its graphs are only read)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".writable-{os.getpid()}-{threading.get_ident()}"
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def save_ir(model: Any, path: Path) -> None:
    """Save an OpenVINO model as ``path`` (.xml, its .bin beside it) whole or not at all."""
    import openvino

    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}-{threading.get_ident()}.xml")
    openvino.save_model(model, str(partial), compress_to_fp16=False)
    partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
    partial.replace(path)  # the .xml last: a reader never sees an .xml without its .bin


def graph_for(path: Path, convert: Callable[[], Any], writable: bool) -> Any:
    """What to compile: the IR file ``path`` (``convert()``-ed and saved first if the cache lacks it, once across
    processes), or the converted model itself where the cache cannot be written."""
    if path.is_file():
        return str(path)
    if not writable:
        return convert()
    with converting(path.parent):
        if not path.is_file():  # another process may have converted it while this one waited
            save_ir(convert(), path)
    return str(path)


def cpu_compiler(folder: Path, writable: bool, precision: str, threads: int) -> Callable[[Any], Any]:
    """``compile(graph)`` for the CPU: one OpenVINO core whose compiled blobs are kept in ``folder/blobs`` where
    it can be written (keyed by the IR, the CPU and the properties: a second start imports the blob instead of
    compiling), every graph with the same properties: ``precision`` ("f32" or "bf16"), ``threads``, latency
    first (one call at a time)."""
    import openvino

    core = openvino.Core()
    # weights read through a mapping of the IR or blob (OpenVINO's default, kept on purpose): the first call repacks
    # them into anonymous memory and later calls read none of the mapped pages, which a pod under its memory limit
    # gets back; read into memory instead, the same bytes are anonymous for good (UNet: 7.4 GB, not 4.1; BENCHMARKS)
    core.set_property({"ENABLE_MMAP": True})
    if writable:
        core.set_property({"CACHE_DIR": str(folder / "blobs")})
    properties = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads}
    return lambda graph: core.compile_model(graph, "CPU", properties)


@contextmanager
def converting(folder: Path) -> Iterator[None]:
    """Held while converting into ``folder``: one converter at a time there, across processes."""
    from filelock import FileLock

    with FileLock(folder / ".convert.lock", timeout=CONVERT_LOCK_S):
        yield
