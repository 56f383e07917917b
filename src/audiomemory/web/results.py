"""The web page's folders: finished images in ``--out`` (the gallery, read back by their PNG metadata)
and the songs of the last ``KEEP_SONGS`` jobs (kept by content hash, so that a remix finds its song
again; older ones are deleted). Nothing here knows Gradio."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiomemory.client import (
    MAX_RECORD_BYTES,
    METADATA_KEY,
    PARAMETERS_KEY,
    ImageResult,
    UnreadableMetadata,
    read_png_text,
    record_from_json,
)
from audiomemory.defaults import STEMS
from audiomemory.lrc import write_lrc
from audiomemory.v1 import record_pb2

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
KEEP_SONGS = 8  # the remix window: the songs of this many recent jobs stay on disk


@dataclass(frozen=True)
class Entry:
    """One image of the gallery: its file, its ``parameters`` text and its record."""

    path: Path
    parameters: str
    record: record_pb2.ImageRecord

    @property
    def caption(self) -> str:
        return f"{self.record.song.filename or 'song'} · seed {self.record.generation.seed}"

    def form(self) -> dict[str, Any]:
        """The form's fields as they were for this image (the seed too: a remix draws a new one)."""
        record, gen = self.record, self.record.generation
        timed = record.request.timed_lyrics  # given as LRC: back as LRC, times and all
        weights = record.request.stem_weights
        return {
            "lyrics": write_lrc((s.start, s.end, s.text) for s in timed) if timed else record.lyrics.full,
            "from_song": record.lyrics.source == "transcribed",
            "strength": record.fusion.strength if record.HasField("fusion") else None,
            "seed": gen.seed,
            "steps": gen.steps,
            "width": gen.width,
            "height": gen.height,
            "scheduler": record.request.scheduler,
            "stem_weights": [float(weights.get(stem, 1.0)) for stem in STEMS],
        }


def read_entry(path: Path) -> Entry | None:
    """``path`` as a gallery entry, or ``None`` when it is not a PNG with Audio Memory metadata (one line logged
    when it is a file the reader cannot use: any bytes, never an exception). Read once, by ``client``'s reader."""
    try:
        text = read_png_text(path)
        record = record_from_json(text[METADATA_KEY], str(path)) if METADATA_KEY in text else None
    except UnreadableMetadata as exc:
        log.warning("gallery: skipped %s", exc)
        return None
    if record is None:
        return None
    return Entry(path, text.get(PARAMETERS_KEY, "")[:MAX_RECORD_BYTES], record)


class Results:
    """``out``: the images (newest first in the gallery); ``uploads``: the songs, named by their SHA-256."""

    def __init__(self, out: Path, uploads: Path, keep_songs: int = KEEP_SONGS) -> None:
        self.out = out
        self.uploads = uploads
        self.keep_songs = keep_songs
        self._moved: dict[Path, Path] = {}  # an upload moved into ``uploads`` → where it went
        out.mkdir(parents=True, exist_ok=True)
        uploads.mkdir(parents=True, exist_ok=True)

    def save(self, result: ImageResult) -> Path:
        """Write the PNG exactly as the orchestrator made it (metadata chunks and all); return its path."""
        seed = result.record.generation.seed
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

    def reel_folder(self, seed: int) -> Path:
        """A new folder for a reel's files under ``out/reels`` (the gallery lists ``out``'s own PNGs only)."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for n in range(1000):
            folder = self.out / "reels" / f"{stamp}-seed{seed}{f'-{n}' if n else ''}"
            try:
                folder.mkdir(parents=True)
                return folder
            except FileExistsError:
                continue
        raise FileExistsError(f"{self.out / 'reels'}: no free name for {stamp}-seed{seed}")

    def entries(self) -> list[Entry]:
        """Every image in ``out`` with Audio Memory metadata, newest first."""
        paths = sorted(self.out.glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        return [entry for entry in map(read_entry, paths) if entry is not None]

    def keep_song(self, path: Path, name: str) -> Path:
        """Move an uploaded song into ``uploads`` as ``<sha256>/<name>`` (hashed as it is read, in blocks:
        never whole in memory) and return it, the newest kept song; the songs of older jobs beyond
        ``keep_songs`` are deleted. A song already kept stays where it is; an upload moved earlier is found
        again, while it is kept (else ``FileNotFoundError``)."""
        if path.resolve().parent.parent == self.uploads.resolve():  # one of ours (a remix put it back in the form)
            os.utime(path.parent)
            return path
        if not path.exists() and path in self._moved and self._moved[path].exists():
            os.utime(self._moved[path].parent)
            return self._moved[path]
        with path.open("rb") as song:
            digest = hashlib.file_digest(song, "sha256").hexdigest()
        kept = self.uploads / digest / name
        kept.parent.mkdir(exist_ok=True)
        if kept.exists():
            path.unlink()
        else:
            shutil.move(path, kept)  # the upload's own copy goes: one copy on disk
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the upload's folder, when nothing else is in it
        os.utime(kept.parent)
        self._moved[path] = kept
        self._forget_old()
        return kept

    def _forget_old(self) -> None:
        songs = sorted((d for d in self.uploads.iterdir() if _SHA256.fullmatch(d.name)),
                       key=lambda d: d.stat().st_mtime_ns, reverse=True)
        for old in songs[self.keep_songs:]:
            shutil.rmtree(old, ignore_errors=True)
        self._moved = {up: kept for up, kept in self._moved.items() if kept.exists()}

    def song_for(self, entry: Entry) -> Path | None:
        """The uploaded song an image was made from, when this app still has it."""
        digest = entry.record.song.sha256
        if not _SHA256.fullmatch(digest):  # a name from a file's metadata: never a path
            return None
        folder = self.uploads / digest
        if not folder.is_dir():
            return None
        return next(iter(sorted(folder.iterdir())), None)
