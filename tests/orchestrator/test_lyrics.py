"""The salient lyrics window of DESIGN.md §3."""

from __future__ import annotations

import pytest

from audiomemory.orchestrator.lyrics import head_window, lyrics_window, normalise, salient_window
from audiomemory.runtime.errors import InvalidInput


def test_most_repeated_line_comes_first_and_ties_keep_first_appearance() -> None:
    lyrics = "Walking alone\nHold me now\nUnder the lights\nHold me now\nunder the LIGHTS!\nHold me, now.\n"
    assert salient_window(lyrics) == "Hold me now, Under the lights, Walking alone"


def test_section_markers_timestamps_and_blank_lines_are_stripped() -> None:
    lyrics = (
        "[ar:Someone]\n[Verse 1]\n[00:01.00]First line\n\n   \n[Chorus: Both]\n"
        "[00:10.50][01:10.50]The hook <00:11.00>goes here\n[02:00]The hook goes here\n"
    )
    assert salient_window(lyrics) == "The hook goes here, First line"


def test_normalisation_ignores_case_punctuation_and_whitespace() -> None:
    assert normalise("  Don't   STOP — me!! ") == "don t stop me"
    assert salient_window("Oh, oh!\noh oh\nOH OH") == "Oh, oh!"


def test_empty_or_marker_only_lyrics_give_the_empty_string() -> None:
    assert salient_window("") == ""
    assert salient_window("[Instrumental]\n\n...\n") == ""


def test_head_keeps_the_lyrics_as_written() -> None:
    text = "[Verse]\nLine one\n\nLine one\n"
    assert head_window(text) == text
    assert lyrics_window(text, "head") == text
    assert lyrics_window(text, "") == "Line one"


def test_unknown_window_name_is_invalid_and_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="salient"):
        lyrics_window("x", "chorus-only")
