"""The web page's folders: finished images in ``--out`` (the gallery, read back by their PNG metadata)
and the songs uploaded while the app runs (kept by content hash, so that a remix finds its song again).
Nothing here knows Gradio."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from audiomemory.client import MAX_RECORD_BYTES, ImageResult, UnreadableMetadata, read_metadata
from audiomemory.runtime.errors import shorten

log = logging.getLogger(__name__)

PARAMETERS_KEY = "parameters"  # the A1111-style text chunk every result PNG carries
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One image of the gallery: its file, its ``parameters`` text and its ``audiomemory`` metadata."""

    path: Path
    parameters: str
    metadata: dict[str, Any]

    @property
    def caption(self) -> str:
        song = self.metadata.get("song", {}).get("filename") or "song"
        return f"{song} · seed {self.metadata.get('generation', {}).get('seed', '?')}"

    def form(self) -> dict[str, Any]:
        """The form's fields as they were for this image (the seed too: a remix draws a new one)."""
        meta = self.metadata
        gen = meta.get("generation", {})
        return {
            "lyrics": meta.get("lyrics", {}).get("full", ""),
            "from_song": meta.get("lyrics", {}).get("source") == "transcribed",
            "strength": meta.get("fusion", {}).get("strength"),
            "seed": gen.get("seed"),
            "steps": gen.get("steps"),
            "width": gen.get("width"),
            "height": gen.get("height"),
            "scheduler": meta.get("request", {}).get("scheduler", ""),
        }


def read_entry(path: Path) -> Entry | None:
    """``path`` as a gallery entry, or ``None`` when it is not a PNG with Audio Memory metadata (one line logged
    when it is a file the reader cannot use: any bytes, never an exception). The record is read by
    ``client.read_metadata``, which checks the type of every field read here."""
    try:
        metadata = read_metadata(path)
        if metadata is None:
            return None
        with Image.open(path) as image:
            parameters = getattr(image, "info", {}).get(PARAMETERS_KEY, "")
    except UnreadableMetadata as exc:
        log.warning("gallery: skipped %s", exc)
        return None
    except Exception as exc:  # the file changed between the two reads: skipped like any other
        log.warning("gallery: skipped %s: %s", path, shorten(exc))
        return None
    return Entry(path, str(parameters)[:MAX_RECORD_BYTES], metadata)


class Results:
    """``out``: the images (newest first in the gallery); ``uploads``: the songs, named by their SHA-256."""

    def __init__(self, out: Path, uploads: Path) -> None:
        self.out = out
        self.uploads = uploads
        out.mkdir(parents=True, exist_ok=True)
        uploads.mkdir(parents=True, exist_ok=True)

    def save(self, result: ImageResult) -> Path:
        """Write the PNG exactly as the orchestrator made it (metadata chunks and all); return its path."""
        seed = result.metadata.get("generation", {}).get("seed", 0)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for n in range(1000):
            path = self.out / f"{stamp}-seed{seed}{f'-{n}' if n else ''}.png"
            try:
                with path.open("xb") as f:  # never overwrite an earlier image
                    f.write(result.png)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"{self.out}: no free name for {stamp}-seed{seed}.png")

    def entries(self) -> list[Entry]:
        """Every image in ``out`` with Audio Memory metadata, newest first."""
        paths = sorted(self.out.glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        return [entry for entry in map(read_entry, paths) if entry is not None]

    def keep_song(self, path: Path, name: str) -> Path:
        """Copy an uploaded song into ``uploads`` as ``<sha256>/<name>``; return the copy."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        kept = self.uploads / digest / name
        if not kept.exists():
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, kept)
        return kept

    def song_for(self, entry: Entry) -> Path | None:
        """The uploaded song an image was made from, when this app still has it."""
        digest = str(entry.metadata.get("song", {}).get("sha256", ""))
        if not _SHA256.fullmatch(digest):  # a name from a file's metadata: never a path
            return None
        folder = self.uploads / digest
        if not folder.is_dir():
            return None
        return next(iter(sorted(folder.iterdir())), None)
