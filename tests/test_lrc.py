"""LRC in and out (``audiomemory.lrc``) and the CLI options that read it and the stem weights: what a user's
file or flag gives, and the error a bad one gets before any service starts."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from audiomemory.cli.common import parse_stem_weights, read_lyrics
from audiomemory.cli.main import cli
from audiomemory.lrc import LrcError, LrcLine, looks_like_lrc, parse_lrc, write_lrc


def test_tags_times_and_repeated_lines_are_read() -> None:
    lrc = parse_lrc(
        "\ufeff[ar: Someone]\n[ti:A Song]\n[length: 03:12]\n\n"
        "[00:12.00]First line\n"
        "[00:15.5][01:02.250]Chorus <00:15.80>with <00:16.10>words\n"
        "[00:20.123]\n"
        "[01:05.00]Last line\n"
    )
    assert lrc.tags == {"ar": "Someone", "ti": "A Song", "length": "03:12"}
    assert lrc.lines == (
        LrcLine(12.0, 15.5, "First line"),
        LrcLine(15.5, 20.123, "Chorus with words"),  # ends where the empty line's tag is
        LrcLine(62.25, 65.0, "Chorus with words"),
        LrcLine(65.0, 0.0, "Last line"),  # the last line: to the song's end
    )


def test_the_offset_tag_shifts_every_line_sooner_and_never_below_zero() -> None:
    lrc = parse_lrc("[offset:+500]\n[00:00.20]one\n[00:10.00]two\n")
    assert [(line.start, line.end) for line in lrc.lines] == [(0.0, 9.5), (9.5, 0.0)]
    later = parse_lrc("[00:01.00]one\n[offset:-250]\n")
    assert later.lines[0].start == 1.25


def test_lines_out_of_order_are_sorted_and_equal_times_end_at_the_next_later_one() -> None:
    lrc = parse_lrc("[00:05.00]b\n[00:01.00]a\n[00:05.00]b2\n[00:09.00]c\n")
    assert [(line.start, line.end, line.text) for line in lrc.lines] == [
        (1.0, 5.0, "a"), (5.0, 9.0, "b"), (5.0, 9.0, "b2"), (9.0, 0.0, "c")]


@pytest.mark.parametrize(("text", "line", "words"), [
    ("[00:01.00]one\nan untimed line\n", 2, "neither a time tag [mm:ss.xx] nor a tag [key:value]: 'an untimed line'"),
    ("[00:01.00]one\n[Chorus]\n", 2, "neither a time tag"),
    ("[ti:x]\n[00:01.00]one\n[00:75.00]two\n", 3, "seconds must be below 60 in the time tag [00:75.00]"),
    ("[00:01.00]one\n[0:1.00]two\n", 2, "a malformed time tag"),
    ("[00:01:00]one\n", 1, "a malformed time tag"),
    ("[00:01.00][00:2.00]one\n", 1, "a malformed time tag"),
    ("[offset:soon]\n[00:01.00]one\n", 1, "[offset:] takes whole milliseconds"),
])
def test_a_line_that_is_not_lrc_is_an_error_naming_it(text: str, line: int, words: str) -> None:
    with pytest.raises(LrcError) as info:
        parse_lrc(text)
    assert info.value.line == line and str(info.value).startswith(f"line {line}: ") and words in str(info.value)


def test_lrc_is_recognised_by_its_first_lyric_line() -> None:
    assert looks_like_lrc("[ar:x]\n\n[00:01.00]la")
    assert not looks_like_lrc("[Chorus]\n[00:01.00]la")  # a section marker: plain lyrics
    assert not looks_like_lrc("la la\n[00:01.00]la")
    assert not looks_like_lrc("")


centis = st.integers(min_value=0, max_value=100 * 600)  # up to 10 minutes, in 10 ms
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="<["),
                min_size=1, max_size=30).map(lambda t: " ".join(t.split())).filter(bool)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(centis, centis.map(lambda c: c + 1), words), min_size=1, max_size=12))
def test_written_lines_read_back_with_the_same_text_and_times_to_10_ms(raw: list[tuple[int, int, str]]) -> None:
    # Lines as a transcript has them: in order, each ending before (or where) the next starts.
    lines, end = [], 0
    for gap, length, text in raw:
        start, end = end + gap, end + gap + length
        lines.append((start / 100, end / 100, text))
    written = write_lrc(lines, {"re": "audiomemory"})
    assert written.startswith("[re:audiomemory]\n[")
    back = parse_lrc(written)
    assert back.tags == {"re": "audiomemory"}
    assert [line.text for line in back.lines] == [text for _, _, text in lines]
    for (s, e, _), line in zip(lines, back.lines, strict=True):
        assert abs(line.start - s) <= 0.01 and abs(line.end - e) <= 0.01


def test_the_written_tags_are_mm_ss_xx() -> None:
    text = write_lrc([(0.004, 1.5, "a"), (61.25, 0.0, "b  c"), (3600.0, 3601.0, "d")])
    assert text == "[00:00.00]a\n[00:01.50]\n[01:01.25]b c\n[60:00.00]d\n[60:01.00]\n"


def test_stem_weights_flag_values() -> None:
    assert parse_stem_weights(None, None, "vocals=1.5, drums=0.5") == {"vocals": 1.5, "drums": 0.5}
    assert parse_stem_weights(None, None, None) is None
    for spec, words in (("guitar=1", "STEM one of vocals, drums, bass, other, got 'guitar=1'"),
                        ("vocals", "expected STEM=WEIGHT"), ("drums=5", "drums: a weight in [0, 4], got '5'"),
                        ("bass=-1", "[0, 4]"), ("other=nan", "got 'nan'"), ("bass=loud", "got 'loud'"),
                        ("bass=1,bass=2", "bass is named twice")):
        with pytest.raises(click.BadParameter) as info:
            parse_stem_weights(None, None, spec)
        assert words in info.value.format_message(), (spec, info.value.format_message())


def test_a_lyrics_file_is_lrc_by_its_name_or_its_lines(tmp_path: Path) -> None:
    lrc = tmp_path / "song.lrc"
    lrc.write_text("[00:01.00]one\n[00:02.50]two\n")
    given_ = read_lyrics(str(lrc))
    assert given_.text == "" and [(s.start, s.end, s.text) for s in given_.timed] == [(1.0, 2.5, "one"),
                                                                                     (2.5, 0.0, "two")]
    txt = tmp_path / "timed.txt"
    txt.write_text("[ar:x]\n[00:03.00]three\n")
    assert [s.text for s in read_lyrics(str(txt)).timed] == ["three"]
    plain = tmp_path / "plain.txt"
    plain.write_text("[Chorus]\nla la\n")
    assert read_lyrics(str(plain)).text == "[Chorus]\nla la\n" and not read_lyrics(str(plain)).timed


@pytest.mark.parametrize(("args", "words"), [
    (["--lyrics", "{bad}"], "bad.lrc is not LRC: line 3: neither a time tag"),
    (["--lyrics", "{empty}"], "no timed line with words"),
    (["--lyrics", "none", "--lrc", "{out}"], "--lyrics none has none"),
    (["--lyrics", "{plain}", "--lrc", "{out}"], "--lyrics with plain text has none"),
    (["--stem-weights", "vocals=9"], "vocals: a weight in [0, 4], got '9'"),
])
def test_bad_lyrics_or_weights_fail_before_any_service_starts(tmp_path: Path, args: list[str], words: str) -> None:
    files = {"bad": tmp_path / "bad.lrc", "empty": tmp_path / "empty.lrc", "plain": tmp_path / "plain.txt",
             "out": tmp_path / "out.lrc"}
    files["bad"].write_text("[ti:x]\n[00:01.00]one\nChorus\n")
    files["empty"].write_text("[ti:x]\n[00:01.00]\n")
    files["plain"].write_text("la la\n")
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    argv = ["generate", str(song), "--orchestrator", "127.0.0.1:9", *(a.format(**files) for a in args)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split()), result.output
    assert not files["out"].exists()
