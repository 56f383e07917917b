"""The smoke runs' shared work folder (the tiny profile written once under it) and song."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work folder for the smoke runs: the tiny profile's models are written under it once (``tiny/``)."""
    return tmp_path_factory.mktemp("bench-work")


@pytest.fixture(scope="session")
def song_file(bench_work: Path) -> Path:
    """A 2-s synthetic stereo song (WAV)."""
    from audiomemory.bench.common import song_wav

    path = bench_work / "song.wav"
    path.write_bytes(song_wav(2.0))
    return path
