"""``audiomemory generate --stem-weights … --lyrics song.lrc --lrc out.lrc`` as a user runs it (the embedded tiny
stack), and ``reproduce`` of the weighted image from its PNG alone plus the song: pixel-exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audiomemory.cli.main import cli
from audiomemory.lrc import parse_lrc

LRC = "[ti:Night]\n[00:00.00]la la la\n[00:00.60][00:01.40]the night is young\n[00:01.00]la la la\n[00:01.80]\n"


@pytest.mark.long
def test_a_weighted_image_from_an_lrc_file_writes_its_lrc_and_reproduces_pixel_exact(
    profile: Path, song: Path, tmp_path: Path
) -> None:
    lyrics = tmp_path / "song.lrc"
    lyrics.write_text(LRC)
    out, lrc_out = tmp_path / "memory.png", tmp_path / "out" / "memory.lrc"
    runner = CliRunner()
    made = runner.invoke(cli, ["generate", str(song), "--lyrics", str(lyrics), "-o", str(out), "--models", str(profile),
                               "--steps", "2", "--size", "64x64", "--seed", "4", "--strength", "0.7",
                               "--stem-weights", "vocals=1.5,drums=0.5", "--lrc", str(lrc_out), "--print-lyrics"],
                         catch_exceptions=False)
    assert made.exit_code == 0, made.output
    meta = json.loads(Image.open(out).text["audiomemory"])  # type: ignore[attr-defined]
    assert meta["request"]["stem_weights"] == {"vocals": 1.5, "drums": 0.5, "bass": 1.0, "other": 1.0}
    assert [line["text"] for line in meta["request"]["timed_lyrics"]] == [
        "la la la", "the night is young", "la la la", "the night is young"]
    assert meta["lyrics"]["text"] == "la la la, the night is young" and meta["lyrics"]["source"] == "given"
    assert "# given with their times, 4 line(s)" in made.output and "[0:01.40 → 0:01.80] the night" in made.output
    assert [(line.start, line.end, line.text) for line in parse_lrc(lrc_out.read_text()).lines] == [
        (line.start, line.end, line.text) for line in parse_lrc(LRC).lines]

    again = tmp_path / "again.png"
    result = runner.invoke(cli, ["reproduce", str(out), "--song", str(song), "--models", str(profile), "-o",
                                 str(again)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "pixels match: max difference 0/255" in result.output
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    plain = tmp_path / "plain.png"  # the same job unweighted: another image
    unweighted = runner.invoke(cli, ["generate", str(song), "--lyrics", str(lyrics), "-o", str(plain), "--models",
                                     str(profile), "--steps", "2", "--size", "64x64", "--seed", "4",
                                     "--strength", "0.7"], catch_exceptions=False)
    assert unweighted.exit_code == 0, unweighted.output
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(plain)))


def test_the_transcript_is_written_as_lrc_with_its_segments_times(profile: Path, song: Path, tmp_path: Path) -> None:
    out, lrc_out = tmp_path / "heard.png", tmp_path / "heard.lrc"
    made = CliRunner().invoke(cli, ["generate", str(song), "-o", str(out), "--models", str(profile), "--steps", "2",
                                    "--size", "64x64", "--lrc", str(lrc_out)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    meta = json.loads(Image.open(out).text["audiomemory"])  # type: ignore[attr-defined]
    segments = meta["lyrics"]["transcript"]["segments"]
    written = parse_lrc(lrc_out.read_text())
    assert written.tags == {"re": "audiomemory (transcribed)"}
    assert f"wrote {lrc_out} ({len(segments)} line(s), transcribed)" in made.output
    heard = [s for s in segments if " ".join(s["text"].split())]  # a segment with no words is no line
    assert heard, segments  # the tiny transcriber's random weights still say something, with times
    assert [line.text for line in written.lines] == [" ".join(s["text"].split()) for s in heard]
    for segment, line in zip(heard, written.lines, strict=True):
        assert abs(line.start - segment["start"]) <= 0.01
        assert abs(line.end - segment["end"]) <= 0.01 or line.end <= segment["end"]
