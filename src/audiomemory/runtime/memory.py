"""Song-sized arrays in pages of their own.

A decoded song is hundreds of megabytes (20 minutes of 48 kHz stereo float32: 461 MB). Taken from the
heap allocator, a freed song stays in the process: tcmalloc keeps freed spans for reuse, and a span
left by one song often does not fit the next buffer, so a server that takes song after song grows
(``scripts/reliability_memory.py``: 8 callers of an 18-minute song one pair after another). Allocated
here instead — an anonymous ``mmap`` per array — its pages are committed only as they are written and
go back to the operating system when the array is freed, whichever allocator the process runs on.
"""

from __future__ import annotations

import mmap

import numpy as np

#: Below this, the heap allocator serves the array (an mmap per small array would only cost syscalls).
MIN_BYTES = 16 << 20


def song_array(shape: tuple[int, ...], dtype: type[np.generic] = np.float32) -> np.ndarray:
    """A zero-filled writable array of ``shape``; at ``MIN_BYTES`` and over, in an anonymous mmap of its own
    (freed to the OS with the last view of it)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes < MIN_BYTES:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).reshape(shape)
