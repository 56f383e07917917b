"""Content-addressed on-disk cache of a song's pooled audio vector and of its vocal stem's transcript.

The separator and the four encoder calls are the expensive front half of a job; their result depends
only on the audio bytes and on which models (and parameters) ran. ``cache_key`` hashes exactly those:
the song's SHA-256, the separator's and the audio encoder's ``Describe`` identities, and the request
parameters that change the output (stem format). A hit skips both services.

It stores what a hit reads — the pooled vector ``a`` (16 KB for 4 × 2 × 512 float32), which is all a
whole-song image needs of the audio, and the song's one-second bins (``timebins.Bins``: count, sum and centred
sum of squares per stem, second and dimension, float32; ~4 MB for a 4-minute song, ~20 MB for 20 minutes),
which is all a span or a reel needs (DESIGN.md §11) — not the frame embeddings they were pooled from. An entry
written before bins were kept (``pooled`` alone) still reads, with ``bins=None``: it serves whole-song jobs;
a job that needs the bins takes it as a miss, recomputes and rewrites it.

A transcript is cached apart, under its own key (the song's SHA-256, the separator's and the transcriber's
identities and the stem format): a job that asks for it on a song whose vector is cached but whose words
are not (an earlier run had lyrics given) separates again for the vocal stem only, and a re-seed never
transcribes again.

Layout: ``<root>/<key[:2]>/<key>.amc``. An entry is a 32-byte SHA-256 of the payload followed by the
payload, an ``.npz`` (no pickles) with the ``pooled`` array (and ``bin_counts`` int32 ``[stems, S]``,
``bin_sums`` and ``bin_m2`` float32 ``[stems, S, D]``), or with ``transcript``: the transcript's JSON
(``runtime.transcript.Transcript.to_dict``) as UTF-8 bytes.
Writes go to a temporary file in the same folder, are fsynced and ``os.replace``d into place, so a
reader sees a whole entry or none. On read the checksum is verified; an entry that fails (partial,
bit-rot, hand-edited) is deleted and reported as a miss — never served. Whoever can write the folder can
write a matching checksum, so an entry is also read as data only: a link is not followed, a file over
``MAX_ENTRY_BYTES`` is not read (nor written: a song too long for it is not cached), the ``.npz`` must hold
exactly one of the known sets of members, each ``.npy`` of its expected name, dtype and number of dimensions,
its header checked before its data is read (no pickle, no size a header or compression promises, all members
together within ``MAX_ENTRY_BYTES``), the bins' shapes must agree with each other and with ``pooled``, and a
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
import math
import os
import stat
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from audiomemory.client import transcript_problem
from audiomemory.orchestrator.timebins import Bins, bins_problem
from audiomemory.runtime.transcript import Transcript

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
_SUFFIX = ".amc"
_DIGEST = 32
#: The largest entry file read or written (a pooled vector is ~16 KB, a 20-minute song's bins ~20 MB and its
#: transcript some 100 KB): a larger file, or arrays whose headers or zip members say more, is a miss and is
#: removed, never read whole; a larger entry is not written (the song is not cached).
MAX_ENTRY_BYTES = 32 << 20
#: name → (dtype, dimensions) of every array an entry may hold
_ARRAYS: dict[str, tuple[np.dtype[Any], int]] = {
    "pooled": (np.dtype(np.float32), 1), "bin_counts": (np.dtype(np.int32), 2), "bin_sums": (np.dtype(np.float32), 3),
    "bin_m2": (np.dtype(np.float32), 3), "transcript": (np.dtype(np.uint8), 1),
}
#: the members an entry holds: one of these sets exactly
_ENTRIES = ({"pooled"}, {"pooled", "bin_counts", "bin_sums", "bin_m2"}, {"transcript"})


def cache_key(audio_sha256: str, **identity: Any) -> str:
    """SHA-256 over the audio hash and canonical JSON of every identity/parameter that shapes the result."""
    blob = json.dumps({"audio": audio_sha256, **identity}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAudio:
    """What the front half of a job produces and a hit reads."""

    pooled: np.ndarray  # float32 [4096], the whole song
    bins: Bins | None = None  # the song's one-second bins (None: an entry from before them)


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
        if len(blob) > min(self.max_bytes, MAX_ENTRY_BYTES):
            log.info("audio cache: an entry of %d bytes is over the limit; not cached", len(blob))
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
    elif value.bins is None:
        np.savez(buf, allow_pickle=False, pooled=np.asarray(value.pooled, dtype=np.float32))
    else:
        np.savez(buf, allow_pickle=False, pooled=np.asarray(value.pooled, dtype=np.float32),
                 bin_counts=value.bins.counts, bin_sums=value.bins.sums, bin_m2=value.bins.m2)
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
    one of the known sets of ``.npy`` members, each of its expected name, dtype and dimensions, its header
    checked before a byte of it is read (no pickle, no allocation a header or a zip member's compression
    promises beyond ``MAX_ENTRY_BYTES`` for all of them together)."""
    if len(blob) <= _DIGEST or len(blob) > MAX_ENTRY_BYTES:
        return None
    digest, payload = blob[:_DIGEST], blob[_DIGEST:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        arrays = _read_members(payload)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError):
        return None
    if "transcript" in arrays:
        try:
            data = json.loads(arrays["transcript"].tobytes().decode())
        except (ValueError, RecursionError):
            return None
        if transcript_problem(data):
            return None
        return CachedTranscript(Transcript.from_dict(data))
    pooled = arrays["pooled"]
    if not np.isfinite(pooled).all():
        return None
    if "bin_counts" not in arrays:
        return CachedAudio(pooled=pooled)
    counts, sums, m2 = arrays["bin_counts"], arrays["bin_sums"], arrays["bin_m2"]
    if bins_problem(counts, sums, m2) or pooled.shape[0] != 2 * sums.shape[0] * sums.shape[2]:
        return None
    return CachedAudio(pooled=pooled, bins=Bins(counts, sums, m2))


def _read_members(payload: bytes) -> dict[str, np.ndarray]:
    """The arrays of an entry's ``.npz``, read through numpy's header reader: ValueError for anything else."""
    arrays: dict[str, np.ndarray] = {}
    budget = MAX_ENTRY_BYTES  # all members' data together
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        infos = archive.infolist()
        names = [info.filename.removesuffix(".npy") for info in infos]
        if len(set(names)) != len(names) or set(names) not in _ENTRIES:
            raise ValueError("not one of the known sets of members")
        for info, name in zip(infos, names, strict=True):
            if info.file_size > budget:
                raise ValueError("a member larger than an entry")
            with archive.open(info) as member:
                arrays[name] = _read_array(member, name, budget)
            budget -= arrays[name].nbytes
    return arrays


def _read_array(member: IO[bytes], name: str, budget: int) -> np.ndarray:
    """One ``.npy`` of ``name``'s dtype and dimensions, of at most ``budget`` bytes of data."""
    dtype, ndim = _ARRAYS[name]
    version = np.lib.format.read_magic(member)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"npy version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    shape, fortran, got = read_header(member)
    if got != dtype or len(shape) != ndim or fortran:
        raise ValueError(f"{got} {shape}, expected {ndim} dimensions of {dtype}")
    size = math.prod(int(n) for n in shape) * dtype.itemsize
    if size > budget:
        raise ValueError("an array larger than an entry")
    data = member.read(size + 1)
    if len(data) != size:
        raise ValueError("the array's data is not the size its header says")
    return np.frombuffer(data, dtype).reshape(shape).copy()
