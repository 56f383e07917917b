"""Peak RSS of each of the five services, as deployed, on a 1-minute and then a 20-minute real song.

Issue 11's memory bound: with each service in a process of its own (``audiomemory serve KIND``) and the
full-size models (random weights, ``bench_e2e.write_models``), the growth of each one's peak RSS (VmHWM)
from a 1-minute song to a 20-minute song is at most 1 GB. The songs are real recordings: Debian's
``asc-music`` tracks (``bench_song.fetch_songs``) laid end to end and cut to length, as 16-bit WAVs.
One set of processes runs the 1-minute job, then the 20-minute one (the kernel's high-water mark only
grows, so the second reading is the peak over both). The services' defaults hold except the OpenL3 hop
(``--hop``, default 2 s, so the 20-minute song's 4 stems take minutes, not half an hour: frames stream
and are pooled as they come, so the hop changes the time, not what is held) and one denoising step
(the generator's memory does not depend on the song).

    python scripts/measure_song_rss.py [--hop 2.0]

Prints each job's timings and one JSON line: the peaks after each job and the growth per service.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from audiomemory.orchestrator.decode import decode_audio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import write_models  # sibling scripts
from bench_song import Services, fetch_songs, run
from benchlib import progress

LIMIT_MB = 1024.0


def long_song(tracks: list[Path], seconds: float, out: Path) -> Path:
    """``tracks`` end to end (repeated as needed), cut to ``seconds``, as a 16-bit stereo WAV at their rate."""
    parts: list[np.ndarray] = []
    total, rate = 0, 0
    while total < seconds * max(rate, 1) or not parts:
        for track in tracks:
            song = decode_audio(track.read_bytes(), filename=track.name, max_seconds=3600)
            rate = rate or song.sample_rate
            samples = song.samples if song.channels == 2 else np.repeat(song.samples, 2, axis=0)
            parts.append(samples)
            total += samples.shape[1]
    audio = np.concatenate(parts, axis=1)[:, : int(seconds * rate)]
    sf.write(out, audio.T, rate, subtype="PCM_16")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hop", type=float, default=2.0, help="OpenL3 hop for both jobs (seconds)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audiomemory-bench-song")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = write_models(args.work / "models")
    models["audio_encoder"] = {**models.get("audio_encoder", {}), "hop_seconds": args.hop}
    tracks = list(fetch_songs(args.work))
    songs = {minutes: long_song(tracks, minutes * 60, args.work / f"song-{minutes}min.wav") for minutes in (1, 20)}
    shutil.rmtree(args.work / "cache-rss", ignore_errors=True)  # both jobs separate and embed
    services = Services(models, args.work / "cache-rss").start()
    peaks: dict[int, dict[str, float]] = {}
    try:
        for minutes, song in songs.items():
            progress(f"{minutes}-minute song")
            result = run(services.addresses["orchestrator"], song, seed=minutes, steps=1)
            progress(json.dumps({k: v for k, v in result.items() if k != "metadata"}))
            peaks[minutes] = services.peak_rss_mb()
    finally:
        services.stop()
    growth = {kind: round(peaks[20][kind] - peaks[1][kind], 1) for kind in peaks[1]}
    print(json.dumps({"peak_rss_mb_1min": peaks[1], "peak_rss_mb_20min": peaks[20], "growth_mb": growth,
                      "hop_seconds": args.hop, "max_growth_mb": max(growth.values()),
                      "within_1_gb": max(growth.values()) <= LIMIT_MB}), flush=True)


if __name__ == "__main__":
    main()
