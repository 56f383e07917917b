"""Files someone could hand a reader of Audio Memory images (``reproduce``, the gallery, ``generate``'s summary):
PNGs and not-PNGs whose ``audiomemory`` record is missing, broken, too deep, too big or of the wrong shape (for the
tests, and the attack suite's file-borne attack)."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, PngImagePlugin


def png(record: Any = None, *, text: str | None = None, compressed: bool = False) -> bytes:
    """An 8×8 PNG whose ``audiomemory`` chunk is ``record`` as JSON, or ``text`` as it is (none when both are None)."""
    info = PngImagePlugin.PngInfo()
    if text is None and record is not None:
        text = json.dumps(record)
    if text is not None:
        if compressed:
            info.add_itxt("audiomemory", text, zip=True)
        else:
            info.add_text("audiomemory", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


GOOD = {"song": {"sha256": "ab" * 32, "filename": "song.mp3"}, "generation": {"seed": 3, "steps": 2},
        "lyrics": {"full": "la la", "text": "la la", "source": "given"}, "fusion": {"strength": 0.25},
        "request": {"seed": "3", "scheduler": "euler"}, "profile": "tiny"}
DEEP = 100_000


def hostile() -> dict[str, bytes]:
    """Name → file bytes; none of them holds a record a reader may use."""
    good = png(GOOD)
    return {
        "not-a-png": b"GIF89a" + bytes(range(256)) * 4,
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "not-json": png(text="{'request': nope"),
        "nested-deep": png(text="[" * DEEP + "]" * DEEP, compressed=True),
        "nested-deep-object": png(text='{"request":' * DEEP + "{}" + "}" * DEEP, compressed=True),
        "a-list": png([1, 2, 3]),
        "request-is-5": png({**GOOD, "request": 5}),
        "lyrics-is-a-list": png({**GOOD, "lyrics": []}),
        "song-is-a-string": png({**GOOD, "song": "song.mp3"}),
        "seed-is-a-dict": png({**GOOD, "generation": {"seed": {"x": 1}}}),
        "request-field-of-wrong-type": png({**GOOD, "request": {"seed": [1]}}),
        "profile-is-a-dict": png({**GOOD, "profile": {"separator": {"repo": "/tmp"}}}),
        "transcript-segments-is-5": png({**GOOD, "lyrics": {"source": "transcribed", "transcript": {"segments": 5}}}),
        "transcript-time-is-nan": png({**GOOD, "lyrics": {"source": "transcribed", "transcript": {
            "text": "a", "language": "en", "seconds": 1.0,
            "segments": [{"start": float("nan"), "end": 1, "text": "a"}]}}}),
        "huge-compressed-chunk": png(text=json.dumps({**GOOD, "pad": "x" * (2 << 20)}), compressed=True),
        "huge-plain-chunk": png(text=json.dumps({**GOOD, "pad": "x" * (2 << 20)})),
    }
