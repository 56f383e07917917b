"""Memory does not grow with the number of callers: ``audiomemory up --models tiny`` with 4 callers of the
same long song at once, twice in a row, then 8 at once (``audiomemory.bench.memory``, here with a 6-minute
song; `make reliability` runs it with 18 minutes). Two jobs run at a time and share ``max_audio_bytes``; the
others wait unread. Both counts run eight jobs with callers waiting behind the running two, so the two peaks
differ only by the four more callers waiting — a job whose successor is already in line hands over while the
services still end its cancelled calls (the separator's pass stops at its next block), which two callers
alone never do (RELIABILITY.md) — and not by the jobs a stack has run (its peak rises with those by
itself). If a waiting caller held its upload or its decoded song, four of them would add 4 × 127 MB. Each
caller cancels once 10 s of its song are separated (decoded, room taken, streaming): `make reliability`
waits for the first embedded frames too. The test runs `make reliability`'s own script, so it is also that
script's smoke test (its JSON lines and keys)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reliability_memory.py"  # what `make reliability` runs

DECODED_MB = 6 * 60 * 44_100 * 2 * 4 / 1e6  # one decoded 6-minute 44.1 kHz stereo song, float32: 127 MB


@pytest.mark.timeout(600)  # 16 jobs of a long song: ~2 min alone, several beside other tests on 2 cores
def test_eight_callers_of_a_long_song_cost_less_than_three_more_songs_of_memory_than_four(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--song-minutes", "6", "--clients", "4x2", "8", "--cancel-at", "separating",
         "--work", str(tmp_path)], capture_output=True, text=True, timeout=580, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, f"exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    four, eight, report = (json.loads(line) for line in run.stdout.strip().splitlines()[-3:])
    assert set(report) == {"song_mb", "song_minutes", "growth_mb", "growth_within_512_mb",
                           "only_ok_exhausted_or_cancelled", "health_serving_throughout"}
    assert report["only_ok_exhausted_or_cancelled"] is True and report["health_serving_throughout"] is True
    for run in (four, eight):
        assert set(run["statuses"]) <= {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}, run
        assert sum(run["statuses"].values()) == run["clients"] * run["rounds"]
        assert run["health_serving_throughout"], run["health_problems"]
    assert eight["peak_rss_mb"] - four["peak_rss_mb"] < 3 * DECODED_MB, (four, eight)
