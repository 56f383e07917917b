"""The reel's files as the CLI and the web page write them (``audiomemory.reel``), from a song and its sections'
images: the PNGs as received, a labelled contact sheet, and an MP4 with the song's own audio in time and the
picture changing at the boundaries (decoded and measured: ``reel_checks``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reel_checks import check_reel_mp4, decoded_audio, frames, write_stereo

from audiomemory.reel import SectionResult, clock, contact_sheet, section_name, video_size, write_mp4, write_reel

RATE = 44100


def write_song(path: Path, seconds: float, codec: str = "pcm_s16le") -> Path:
    """Seeded noise under a slow swell and a few tones: no two moments alike, so the cross-correlation has
    one peak."""
    rng = np.random.default_rng(3)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 331.0, 467.0)) / 3
    audio = 0.3 * rng.standard_normal((2, n)) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 7.3)) + 0.3 * tones
    audio = (0.8 * audio / np.abs(audio).max()).astype(np.float32)
    return write_stereo(path, audio, RATE, codec)


def section_png(seed: int, size: int = 96) -> bytes:
    """A picture unlike another seed's: a coloured gradient under blocks of noise."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.2, 1.0, 3)
    blocks = np.kron(rng.uniform(0, 120, (8, 8, 3)), np.ones((size // 8, size // 8, 1)))
    image = Image.fromarray(np.clip(base + blocks, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sections(spans: list[tuple[int, int]], size: int = 96) -> list[SectionResult]:
    return [SectionResult(i, a, b, section_png(10 + i, size)) for i, (a, b) in enumerate(spans)]


def test_names_and_labels_say_the_place_and_the_span() -> None:
    section = SectionResult(0, 0, 32, b"")
    assert section_name(section) == "section-01-0000-0032s.png"
    assert section_name(SectionResult(11, 605, 1200, b"")) == "section-12-0605-1200s.png"
    assert section.label == "00:00–00:32" and clock(4505) == "75:05"
    assert video_size(512, 512) == (512, 512) and video_size(65, 33) == (64, 32)
    assert video_size(2048, 1536) == (1024, 768)


def test_the_reel_writes_the_sections_the_sheet_and_an_mp4_of_the_song_in_time(tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 60.0)
    spans = [(0, 20), (20, 45), (45, 60)]
    given = sections(spans)
    start = time.perf_counter()
    files = write_reel(song, list(reversed(given)), tmp_path / "reel", crossfade=0.75)  # any order: by index
    seconds = time.perf_counter() - start
    assert seconds < 15, f"a 1-minute reel took {seconds:.1f} s to write"  # a few seconds on 2 loaded cores
    assert [p.name for p in files.sections] == [section_name(s) for s in given]
    assert [p.read_bytes() for p in files.sections] == [s.png for s in given]  # byte for byte, record and all
    index = json.loads(files.index.read_text())
    assert index["seconds"] == pytest.approx(60.0, abs=0.05) and index["video"] == "reel.mp4"
    assert [(s["start_s"], s["end_s"]) for s in index["sections"]] == spans
    sheet = Image.open(files.sheet)
    assert sheet.size == contact_sheet(given).size and sheet.width > 3 * 96
    assert files.video is not None
    measured = check_reel_mp4(files.video, song, [s.png for s in given], spans, fade=0.75)
    print(f"1-minute reel written in {seconds:.2f} s; {measured}")


def test_an_mp3_song_with_short_sections_and_a_long_fade_keeps_its_time(tmp_path: Path) -> None:
    """An MP3 (the decoder trims its encoder delay) at 44.1 kHz; a fade longer than the shortest section is
    shortened to it, so the pictures still change at every boundary."""
    song = write_song(tmp_path / "song.mp3", 12.0, codec="libmp3lame")
    spans = [(0, 2), (2, 3), (3, 12)]
    given = sections(spans, size=64)
    out = tmp_path / "reel.mp4"
    seconds = write_mp4(song, given, out, fps=10, crossfade=4.0)
    assert seconds == pytest.approx(len(decoded_audio(song)) / 8000, abs=0.01)
    check_reel_mp4(out, song, [s.png for s in given], spans, fade=1.0)
    shown = frames(out)
    assert shown[0][1].shape[:2] == (64, 64)
    assert len(shown) == pytest.approx(12.0 * 10, abs=2)
