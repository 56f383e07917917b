"""Weight hashes: the one sha256 every backend feeds, and the one revision format ``Describe`` reports.

A backend's weights come as a file (OpenL3), a folder of files (Hugging Face layouts) or loaded
tensors (Demucs' state dicts). Each is fed to a ``WeightHash``; ``revision()`` renders
``sha256:<first 16 hex digits>``, the ``ModelInfo.revision`` of every model that is not a hub
snapshot (whose revision is its commit).

What goes into the hash, per source (so a given set of weights always gets the same revision):

- a file: its bytes;
- a folder: for each chosen file in sorted order, its relative POSIX path, a NUL, its bytes;
- tensors: for each ``(name, tensor)`` in the order given, the name (UTF-8) then the tensor's
  little-endian C-order bytes.

The lock (``check_lock``, ``record_lock``): weights from a host with no immutable revision
(torchopenl3's) are guarded by ``audiomemory-weights.lock.json`` beside them, ``{"sha256": {file
name: hex digest}}``, written by ``models pull`` (or at the first load, trust on first use) and
checked at every later load; a file whose sha256 differs is refused naming both hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from audiomemory.runtime.codec import as_numpy
from audiomemory.runtime.errors import ModelUnavailable

log = logging.getLogger(__name__)

REVISION_PREFIX = "sha256:"
REVISION_HEX_DIGITS = 16
_BLOCK = 1 << 22


def revision(hexdigest: str) -> str:
    """The revision string for a sha256 hex digest: ``sha256:<first 16 hex digits>``."""
    return REVISION_PREFIX + hexdigest[:REVISION_HEX_DIGITS]


class WeightHash:
    """One running sha256 over weights; each ``add_*`` returns the hash so calls chain."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add_bytes(self, data: bytes | memoryview) -> WeightHash:
        self._sha.update(data)
        return self

    def add_file(self, path: Path) -> WeightHash:
        """The file's bytes, read in blocks."""
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                self._sha.update(block)
        return self

    def add_folder(self, folder: Path, patterns: Sequence[str] = ()) -> WeightHash:
        """Every file matching ``patterns`` (relative POSIX paths, fnmatch), or every file when none
        matches (e.g. a flat folder): its relative path, a NUL and its bytes, in sorted order."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        chosen = [p for p in files if any(fnmatch(p.relative_to(folder).as_posix(), pat) for pat in patterns)]
        for file in chosen or files:
            self._sha.update(file.relative_to(folder).as_posix().encode())
            self._sha.update(b"\0")
            self.add_file(file)
        return self

    def add_tensors(self, named: Iterable[tuple[str, Any]]) -> WeightHash:
        """Each ``(name, tensor)`` (numpy array or torch tensor, any device or layout): the name, then
        the tensor's bytes."""
        for name, tensor in named:
            self._sha.update(name.encode())
            self._sha.update(as_numpy(tensor).reshape(-1).view(np.uint8).data)  # its bytes, not a copy
        return self

    def hexdigest(self) -> str:
        """The full sha256 hex digest of everything added so far."""
        return self._sha.hexdigest()

    def revision(self) -> str:
        """``sha256:<first 16 hex digits>`` of everything added so far."""
        return revision(self.hexdigest())


# -- the lock: a file's sha256, recorded once, checked at every load -------------------------------

#: The lock file beside weights fetched from a host without immutable revisions (torchopenl3's).
LOCK_NAME = "audiomemory-weights.lock.json"


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _lock_path(path: Path) -> Path:
    return path.parent / LOCK_NAME


def read_lock(path: Path) -> dict[str, str]:
    """The ``{file name: sha256}`` recorded beside ``path`` (empty without a lock); an unreadable lock
    is refused, never treated as no lock."""
    lock = _lock_path(path)
    if not lock.is_file():
        return {}
    try:
        files = json.loads(lock.read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelUnavailable(f"weights lock {str(lock)!r} is unreadable ({type(exc).__name__}); "
                               "refusing the weights it guards (pull them again)") from None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelUnavailable(f"weights lock {str(lock)!r} is malformed; refusing the weights it guards")
    return files


def record_lock(path: Path, sha256: str) -> None:
    """Record ``path``'s sha256 in the lock beside it (atomically: a reader sees the old or the new)."""
    files = read_lock(path)
    files[path.name] = sha256
    lock = _lock_path(path)
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": dict(sorted(files.items()))}, indent=1) + "\n")
    tmp.replace(lock)


def check_lock(path: Path, sha256: str) -> None:
    """Refuse ``path`` when the lock beside it records another sha256 for it, naming both hashes.
    Without an entry, record this one (trust on first use); a read-only folder only logs that."""
    expected = read_lock(path).get(path.name)
    if expected is None:
        try:
            record_lock(path, sha256)
            log.warning("weights %s had no entry in %s: recorded sha256 %s (trust on first use)",
                        path, LOCK_NAME, sha256)
        except OSError as exc:
            log.warning("weights %s are in no lock and it cannot be written (%s); not checked", path, exc)
        return
    if expected != sha256:
        raise ModelUnavailable(
            f"weights {str(path)!r} have sha256 {sha256}, but {LOCK_NAME} beside them records {expected}: "
            "refused (the file changed since it was pulled; run `audiomemory models pull` again, or delete "
            "its entry from the lock if you replaced it on purpose)"
        )
