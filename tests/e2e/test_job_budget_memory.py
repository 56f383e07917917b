"""Memory does not grow with the number of callers: ``audiomemory up --models tiny`` with 2 callers of the
same long song at once four times in a row, then 8 at once (``scripts/reliability_memory.py``, here with a
4-minute song; `make reliability` runs it with 18 minutes). Two jobs run at a time and share
``max_audio_bytes``; the others wait unread. Without that, six more running jobs would hold six more
decoded songs (6 × 85 MB here). Both counts run eight jobs: the peak of a stack that has run more jobs is
higher by itself (one pair: ~200 MB below eight callers; four pairs: −1 and +122 MB with a 6-minute song,
RELIABILITY.md), and the test is about the callers waiting, not the jobs run.

4 minutes, not 6, for the suite's time (every job uploads and decodes the whole song: 118-170 s of the suite
at 6 minutes, near pytest's 300 s timeout on a loaded machine). The bound, three decoded songs (254 MB), is
still twice the largest growth seen with the budget working (+122 MB, which does not grow with the song: it is
the jobs' activations and buffers), and half of what a broken budget adds (six songs, 508 MB)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from reliability_memory import measure, write_mp3  # the script `make reliability` runs

MINUTES = 4.0
DECODED_MB = MINUTES * 60 * 44_100 * 2 * 4 / 1e6  # one decoded 44.1 kHz stereo song, float32: 85 MB


@pytest.mark.timeout(600)  # 16 jobs of a long song: ~2 min alone, several beside other tests on 2 cores
def test_eight_callers_of_a_long_song_cost_less_than_three_more_songs_of_memory_than_two(tmp_path: Path) -> None:
    song = write_mp3(tmp_path / "song.mp3", MINUTES)
    two, eight = measure([(2, 4), 8], song)
    for run in (two, eight):
        assert set(run["statuses"]) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}, run
        assert sum(run["statuses"].values()) == run["clients"] * run["rounds"]
        assert run["health_serving_throughout"], run["health_problems"]
    assert eight["peak_rss_mb"] - two["peak_rss_mb"] < 3 * DECODED_MB, (two, eight)
