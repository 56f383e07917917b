"""``audiomemory reel`` as a user runs it, with the embedded tiny models: the sections printed, each section's PNG
with its record, the contact sheet, and an MP4 whose audio is the song's (its length within 0.1 s, within 50 ms
of it by cross-correlation) and whose picture changes at the boundaries the command reported."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from reel_checks import check_reel_mp4, write_stereo

from audiomemory.cli.main import cli
from audiomemory.client import read_record
from audiomemory.stack import MODEL_KINDS

RATE = 44100
PARTS = (20.0, 25.0, 20.0)  # seconds: a quiet pad, a loud noisy beat, a bright melody (issue 22: >= 60 s in all)
HOP = 4.0  # seconds between the audio encoder's frames: 17 windows a stem of the full-size OpenL3 CNN


def three_part_song(path: Path, parts: tuple[float, ...] = PARTS) -> Path:
    """A song of three clearly different parts of known lengths, as an MP3."""
    rng = np.random.default_rng(5)
    pieces = []
    for n, seconds in enumerate(parts):
        t = np.arange(int(seconds * RATE)) / RATE
        if n % 3 == 0:
            x = 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (110.0, 138.6, 164.8))
        elif n % 3 == 1:
            x = 0.6 * rng.standard_normal(t.size) * np.exp(-12 * ((t * 2.5) % 1)) + 0.3 * np.sin(2 * np.pi * 55 * t)
        else:
            x = 0.3 * np.sin(2 * np.pi * (880 + 220 * np.floor(t * 4 % 4)) * t)
        pieces.append(np.stack([x, 0.9 * x]))
    audio = np.concatenate(pieces, axis=1)
    audio = (0.8 * audio / np.abs(audio).max()).astype(np.float32)
    return write_stereo(path, audio, RATE, "libmp3lame", "mp3")


@pytest.fixture(scope="module")
def profile(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = {kind: tiny(kind) for kind in MODEL_KINDS}
    overrides["audio_encoder"]["hop_seconds"] = HOP  # three one-second bins in four filled from their neighbours
    path = tmp_path_factory.mktemp("profile") / "tiny.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return path


@pytest.mark.slow
@pytest.mark.long
def test_reel_writes_the_sections_the_sheet_and_an_mp4_of_the_song_changing_at_the_boundaries(
    profile: Path, tmp_path: Path
) -> None:
    song = three_part_song(tmp_path / "three-parts.mp3")
    out = tmp_path / "reel"
    result = CliRunner().invoke(cli, [
        "reel", str(song), "--lyrics", "none", "-o", str(out), "--models", str(profile), "--sections", "3",
        "--seed-per-section", "--seed", "3", "--steps", "1", "--size", "64x64", "--crossfade", "0.5",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spans = [(int(a), int(b)) for a, b in re.findall(r"^section +\d+ .*\[(\d+), (\d+)\) s$", result.stdout, re.M)]
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == sum(PARTS), result.stdout
    index = json.loads((out / "reel.json").read_text())
    assert [(s["start_s"], s["end_s"]) for s in index["sections"]] == spans
    pngs = [(out / s["png"]).read_bytes() for s in index["sections"]]
    for i, (png, span) in enumerate(zip(pngs, spans, strict=True)):
        assert (out / f"section-{i + 1:02d}-{span[0]:04d}-{span[1]:04d}s.png").read_bytes() == png
        record = read_record(png)
        assert record is not None and record.section.index == i
        assert (record.request.span.start_s, record.request.span.end_s) == span
        assert record.generation.seed == 3 + i and Image.open(io.BytesIO(png)).size == (64, 64)
    sheet = Image.open(out / "sheet.png")
    assert sheet.width > 3 * 64 and sheet.height > 64
    check_reel_mp4(out / "reel.mp4", song, pngs, spans, fade=0.5)



@pytest.mark.parametrize(("args", "words"), [
    (["--stem-weights", "piano=2"], "--stem-weights"),
    (["--stem-weights", "vocals=loud"], "--stem-weights"),
    (["--lyrics", "no-such-file.txt"], "--lyrics"),
    (["--size", "big"], "--size"),
    (["--crossfade", "-1"], "--crossfade"),
])
def test_a_bad_option_is_a_usage_error_naming_it_before_any_service_starts(
    tmp_path: Path, args: list[str], words: str
) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")  # never read: the options are refused first
    result = CliRunner().invoke(cli, ["reel", str(song), "--models", "tiny", "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and words in result.output, result.output
    assert "starting services" not in result.output and not (tmp_path / "out").exists()
