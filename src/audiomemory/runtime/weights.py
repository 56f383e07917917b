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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from audiomemory.runtime.codec import as_numpy

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
