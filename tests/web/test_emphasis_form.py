"""The form's stem weights and LRC lyrics as the page's handlers read them (no browser: the functions the
generate and remix handlers call)."""

from __future__ import annotations

import json

import pytest

from audiomemory.client import record_from_json
from audiomemory.lrc import LrcError
from audiomemory.web.app import lyrics_text, stem_weights
from audiomemory.web.results import Entry


def test_sliders_left_at_one_send_no_weights_and_any_other_sends_all_four() -> None:
    assert stem_weights((1.0, 1.0, 1.0, 1.0)) is None
    assert stem_weights((2.5, 1.0, 0.0, 1.0)) == {"vocals": 2.5, "drums": 1.0, "bass": 0.0, "other": 1.0}


def test_lrc_in_the_lyrics_box_goes_as_timed_lines_and_plain_text_as_lyrics() -> None:
    text, timed = lyrics_text("[ti:x]\n[00:01.00]one\n[00:02.00]two\n")
    assert text == "" and timed is not None
    assert [(s.start, s.end, s.text) for s in timed] == [(1.0, 2.0, "one"), (2.0, 0.0, "two")]
    assert lyrics_text("[Chorus]\nla la\n") == ("[Chorus]\nla la\n", None)
    with pytest.raises(LrcError, match="line 3"):
        lyrics_text("[00:01.00]one\n\nno tag here\n")


def test_a_remix_gets_the_weights_and_the_lrc_an_image_records() -> None:
    meta = {"request": {"stem_weights": {"vocals": 1.5, "bass": 0.5},
                        "timed_lyrics": [{"start": 0.5, "end": 2.0, "text": "one"}, {"start": 2.0, "text": "two"}]},
            "lyrics": {"full": "one\ntwo"}}
    form = Entry(None, "", record_from_json(json.dumps(meta))).form()  # type: ignore[arg-type]
    assert form["stem_weights"] == [1.5, 1.0, 0.5, 1.0]
    assert form["lyrics"] == "[00:00.50]one\n[00:02.00]two\n"
    plain = Entry(None, "", record_from_json(json.dumps({"lyrics": {"full": "la"}}))).form()  # type: ignore[arg-type]
    assert plain["stem_weights"] == [1.0] * 4 and plain["lyrics"] == "la"
