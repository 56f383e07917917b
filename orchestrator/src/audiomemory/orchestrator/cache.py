"""Content-addressed on-disk cache of a song's pooled audio vector and of its vocal stem's transcript.

The separator and the four encoder calls are the expensive front half of a job; their result depends
only on the audio bytes and on which models (and parameters) ran. ``cache_key`` hashes exactly those:
the song's SHA-256, the separator's and the audio encoder's ``Describe`` identities, and the request
parameters that change the output (stem format). A hit skips both services.

It stores what a hit reads — the pooled vector ``a`` (16 KB for 4 × 2 × 512 float32), which is also all
the image's metadata needs of the audio — not the frame embeddings it was pooled from (a 4-minute song's
``[T, 512]`` arrays were ~20 MB an entry, written and fsynced for no reader).

A transcript is cached apart, under its own key (the song's SHA-256, the separator's and the transcriber's
identities and the stem format): a job that asks for it on a song whose vector is cached but whose words
are not (an earlier run had lyrics given) separates again for the vocal stem only, and a re-seed never
transcribes again.

Layout: ``<root>/<key[:2]>/<key>.amc``. An entry is a 32-byte SHA-256 of the payload followed by the
payload, an ``.npz`` (no pickles) with the ``pooled`` array, or with ``transcript``: the transcript's JSON
(``runtime.transcript.Transcript.to_dict``) as UTF-8 bytes.
Writes go to a temporary file in the same folder, are fsynced and ``os.replace``d into place, so a
reader sees a whole entry or none. On read the checksum is verified; an entry that fails (partial,
bit-rot, hand-edited) is deleted and reported as a miss — never served. Whoever can write the folder can
write a matching checksum, so an entry is also read as data only: a link is not followed, a file over
``MAX_ENTRY_BYTES`` is not read, the ``.npz`` must hold one ``.npy`` of the expected name and dtype whose
header is checked before its data is read (no pickle, no size a header or compression promises), and a
transcript must have ``Transcript.to_dict``'s shape; anything else is a corrupt entry, a miss. A key is
64 hex digits (``path`` refuses anything else), so no key names a file outside the folder. LRU by file mtime (touched
on every hit), evicted after each write until the folder is under ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import stat
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiomemory.client import transcript_problem
from audiomemory.runtime.transcript import Transcript

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
_SUFFIX = ".amc"
_DIGEST = 32
#: The largest entry file read (a pooled vector is ~16 KB, a 20-minute song's transcript some 100 KB): a larger
#: file, or an array whose header or zip member says more, is a miss and is removed, never read whole.
MAX_ENTRY_BYTES = 16 << 20
_ARRAYS: dict[str, np.dtype[Any]] = {"pooled": np.dtype(np.float32), "transcript": np.dtype(np.uint8)}  # one each


def cache_key(audio_sha256: str, **identity: Any) -> str:
    """SHA-256 over the audio hash and canonical JSON of every identity/parameter that shapes the result."""
    blob = json.dumps({"audio": audio_sha256, **identity}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAudio:
    """What the front half of a job produces and a hit reads."""

    pooled: np.ndarray  # float32 [4096]


@dataclass(frozen=True)
class CachedTranscript:
    """What a transcription produces and a hit on its key reads."""

    transcript: Transcript


Entry = CachedAudio | CachedTranscript


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    evictions: int = 0
    write_errors: int = 0


class AudioCache:
    """The cache; thread-safe within a process, and safe across processes sharing ``root``."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be 64 hex digits, got {key!r}")
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> Entry | None:
        """The entry, or ``None`` on a miss or a corrupt entry (which is removed)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            blob = _read_blob(path)
        except FileNotFoundError:
            self._count("misses")
            return None
        except OSError as exc:
            log.warning("audio cache: cannot read %s: %s", path, exc)
            self._count("misses")
            return None
        value = None if blob is None else _decode_entry(blob)
        if value is None:
            log.warning("audio cache: entry %s failed its checksum or format check; recomputing", path.name)
            self._count("corrupt")
            self._count("misses")
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit makes the entry young again
        self._count("hits")
        return value

    def put(self, key: str, value: Entry) -> bool:
        """Store atomically and evict old entries; False (logged) when it could not be written."""
        if not self.enabled:
            return False
        blob = _encode_entry(value)
        if len(blob) > self.max_bytes:
            return False
        path = self.path(key)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            # A read-only or full disk must not fail the job: the cache is an optimisation.
            log.warning("audio cache: cannot write %s: %s", path, exc)
            self._count("write_errors")
            return False
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
        self.evict()
        return True

    def evict(self) -> None:
        """Remove least recently used entries until the cache is within ``max_bytes``."""
        with self._lock:
            entries: list[tuple[float, int, Path]] = []
            for path in self.root.glob(f"*/*{_SUFFIX}"):
                if path.name.startswith(".tmp-"):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                self.stats.evictions += 1

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def _encode_entry(value: Entry) -> bytes:
    buf = io.BytesIO()
    if isinstance(value, CachedTranscript):
        text = json.dumps(value.transcript.to_dict(), sort_keys=True, ensure_ascii=False).encode()
        np.savez(buf, allow_pickle=False, transcript=np.frombuffer(text, dtype=np.uint8))
    else:
        np.savez(buf, allow_pickle=False, pooled=np.asarray(value.pooled, dtype=np.float32))
    payload = buf.getvalue()
    return hashlib.sha256(payload).digest() + payload


def _read_blob(path: Path) -> bytes | None:
    """The entry file's bytes; ``None`` when it is not one the cache wrote: a link (never followed out of the
    folder), not a regular file, or larger than any entry (never read whole)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY_BYTES:
            return None
        return fh.read(MAX_ENTRY_BYTES + 1)


def _decode_entry(blob: bytes) -> Entry | None:
    """The entry in ``blob``, or ``None`` for anything but what ``_encode_entry`` writes. The checksum only
    catches damage (whoever can write the folder can write a matching one), so the payload is read as data:
    one ``.npy`` member of the expected name and dtype, its header checked before a byte of it is read (no
    pickle, no allocation a header or a zip member's compression promises beyond ``MAX_ENTRY_BYTES``)."""
    if len(blob) <= _DIGEST or len(blob) > MAX_ENTRY_BYTES:
        return None
    digest, payload = blob[:_DIGEST], blob[_DIGEST:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        name, array = _read_member(payload)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError):
        return None
    if name == "transcript":
        try:
            data = json.loads(array.tobytes().decode())
        except (ValueError, RecursionError):
            return None
        if transcript_problem(data):
            return None
        return CachedTranscript(Transcript.from_dict(data))
    if array.ndim != 1 or not np.isfinite(array).all():
        return None
    return CachedAudio(pooled=array)


def _read_member(payload: bytes) -> tuple[str, np.ndarray]:
    """The one array of an entry's ``.npz``, read through numpy's header reader: ValueError for anything else."""
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        infos = archive.infolist()
        name = infos[0].filename.removesuffix(".npy") if len(infos) == 1 else ""
        dtype = _ARRAYS.get(name)
        if dtype is None or infos[0].file_size > MAX_ENTRY_BYTES:
            raise ValueError("not one member of a known name and size")
        with archive.open(infos[0]) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, got = read_header(member)
            if got != dtype or len(shape) != 1:
                raise ValueError(f"{got} {shape}, expected a vector of {dtype}")
            size = int(shape[0]) * dtype.itemsize
            data = member.read(size + 1)
    if len(data) != size:
        raise ValueError("the array's data is not the size its header says")
    return name, np.frombuffer(data, dtype).copy()
