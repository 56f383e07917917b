"""Memory does not grow with the number of callers: ``audiomemory up --models tiny`` with 2 callers of the
same long song at once four times in a row, then 8 at once (``audiomemory.bench.memory``, here with a
6-minute song; `make reliability` runs it with 18 minutes). Two jobs run at a time and share
``max_audio_bytes``; the others wait unread. Without that, six more running jobs would hold six more
decoded songs (6 × 127 MB here). Both counts run eight jobs: the peak of a stack that has run more jobs is
higher by itself (one pair: ~200 MB below eight callers; four pairs: −1 and +122 MB, RELIABILITY.md), and
the test is about the callers waiting, not the jobs run."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiomemory.bench.memory import measure, write_mp3  # what `make reliability` runs

DECODED_MB = 6 * 60 * 44_100 * 2 * 4 / 1e6  # one decoded 6-minute 44.1 kHz stereo song, float32: 127 MB


@pytest.mark.timeout(600)  # 16 jobs of a long song: ~2 min alone, several beside other tests on 2 cores
def test_eight_callers_of_a_long_song_cost_less_than_three_more_songs_of_memory_than_two(tmp_path: Path) -> None:
    song = write_mp3(tmp_path / "song.mp3", 6.0)
    two, eight = measure([(2, 4), 8], song)
    for run in (two, eight):
        assert set(run["statuses"]) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}, run
        assert sum(run["statuses"].values()) == run["clients"] * run["rounds"]
        assert run["health_serving_throughout"], run["health_problems"]
    assert eight["peak_rss_mb"] - two["peak_rss_mb"] < 3 * DECODED_MB, (two, eight)
