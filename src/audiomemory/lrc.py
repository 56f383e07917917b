"""LRC lyrics (the ``.lrc`` format of synced lyrics), read strictly and written plainly.

No LRC library on PyPI fits: ``pylrc`` has had no release since 2020, ``lrctoolbox`` is GPL-3.0 and reads
leniently (a line it cannot parse becomes an untimed lyric, a bad time tag passes unnoticed, ``[offset:]``
is not applied), and ``lrcup`` is a client of the LRCLIB web API, not a parser. The format is small: one
regular expression a tag.

- ``parse_lrc(text)`` → ``Lrc``: its timed lines (``LrcLine``: start, end, text), sorted by time, and its
  metadata tags (``[ar:…]``, ``[ti:…]``, ``[al:…]``, …). A line's time tags are ``[mm:ss]``, ``[mm:ss.x]``,
  ``[mm:ss.xx]`` or ``[mm:ss.xxx]`` (minutes any number of digits, seconds below 60); a line may carry
  several (a repeated chorus), each making a line. ``[offset:±ms]`` shifts every time (a positive offset
  shows the lyrics sooner: time = tag − offset, at least 0). Enhanced LRC's word times ``<mm:ss.xx>`` are
  dropped from the text. A line's end is the next later time tag's time — a line with no text (a tag
  alone) only ends the line before it — and the last line's end is 0: "to the song's end".
  Anything else that is not blank — a line without a tag, a malformed tag — is an ``LrcError`` naming the
  line's number and what was wrong.
- ``looks_like_lrc(text)`` — the first line that is neither blank nor a metadata tag starts with a time tag.
- ``write_lrc(lines, tags)`` → the ``.lrc`` text: ``[mm:ss.xx]`` tags (rounded to 10 ms), a line with no
  text at a line's end when the next one starts later (or after the last), so reading it back gives the
  same starts and ends to 10 ms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Lrc", "LrcError", "LrcLine", "looks_like_lrc", "parse_lrc", "write_lrc"]

_TIME = r"\[(\d+):(\d{2})(?:\.(\d{1,3}))?\]"
_TIMES = re.compile(rf"^(?:{_TIME})+")
_ONE_TIME = re.compile(_TIME)
_META = re.compile(r"^\[([A-Za-z#][A-Za-z0-9_#-]*):([^\]]*)\]$")
_WORD_TIME = re.compile(r"<\d+:\d{2}(?:\.\d{1,3})?>")
_MALFORMED = re.compile(r"\[\d*:")  # how a time tag starts
_OFFSET = re.compile(r"^[+-]?\d{1,9}$")
_SPACE = re.compile(r"\s+")
_SHOWN = 60  # characters of a bad line an error shows


class LrcError(ValueError):
    """A line that is not LRC: ``line`` is its 1-based number."""

    def __init__(self, line: int, problem: str, content: str) -> None:
        shown = content if len(content) <= _SHOWN else content[:_SHOWN] + "…"
        super().__init__(f"line {line}: {problem}: {shown!r}")
        self.line = line


@dataclass(frozen=True)
class LrcLine:
    start: float  # seconds
    end: float  # seconds; 0 = to the song's end (the last line)
    text: str


@dataclass(frozen=True)
class Lrc:
    lines: tuple[LrcLine, ...]
    tags: dict[str, str] = field(default_factory=dict)  # metadata: ar, ti, al, by, offset, …


def _seconds(match: re.Match[str], number: int, raw: str) -> float:
    minutes, seconds, fraction = match.group(1), match.group(2), match.group(3) or ""
    if int(seconds) >= 60:
        raise LrcError(number, f"seconds must be below 60 in the time tag {match.group(0)}", raw)
    return int(minutes) * 60 + int(seconds) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _timed(stripped: str, number: int, raw: str) -> tuple[list[float], str]:
    """A line's time tags (in seconds) and its text."""
    tags = _TIMES.match(stripped)
    assert tags is not None
    times = [_seconds(m, number, raw) for m in _ONE_TIME.finditer(tags.group(0))]
    text = _SPACE.sub(" ", _WORD_TIME.sub(" ", stripped[tags.end():])).strip()
    if _MALFORMED.match(text):  # a tag after the line's valid ones that is not one
        raise LrcError(number, "a malformed time tag (expected [mm:ss], [mm:ss.xx] or [mm:ss.xxx])", raw)
    return times, text


def parse_lrc(text: str) -> Lrc:
    """``text`` as LRC (see the module's docstring); ``LrcError`` names the first line that is not."""
    entries: list[tuple[float, int, str]] = []  # (time, order, text): text "" only ends the line before
    tags: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip().lstrip("\ufeff")
        if not stripped:
            continue
        if _TIMES.match(stripped):
            times, words = _timed(stripped, number, raw)
            entries += [(t, len(entries) + i, words) for i, t in enumerate(times)]
            continue
        meta = _META.match(stripped)
        if meta is None:
            problem = ("a malformed time tag (expected [mm:ss], [mm:ss.xx] or [mm:ss.xxx])"
                       if _MALFORMED.match(stripped) else "neither a time tag [mm:ss.xx] nor a tag [key:value]")
            raise LrcError(number, problem, raw)
        key, value = meta.group(1).lower(), meta.group(2).strip()
        if key == "offset" and not _OFFSET.match(value):
            raise LrcError(number, "[offset:] takes whole milliseconds such as +250 or -100", raw)
        tags[key] = value
    shift = int(tags.get("offset", "0")) / 1000
    entries = sorted((max(0.0, t - shift), order, words) for t, order, words in entries)
    return Lrc(tuple(_lines(entries)), tags)


def _lines(entries: list[tuple[float, int, str]]) -> Iterable[LrcLine]:
    """Each line with text, ending at the next later time (0: none, the song's end)."""
    times = [t for t, _, _ in entries]
    later = 0
    for i, (start, _, words) in enumerate(entries):
        later = max(later, i + 1)
        while later < len(times) and times[later] <= start:
            later += 1
        if words:
            yield LrcLine(start, times[later] if later < len(times) else 0.0, words)


def looks_like_lrc(text: str) -> bool:
    """Whether ``text`` is meant as LRC: its first line that is neither blank nor a metadata tag starts with a
    time tag (``[00:12.00]``); section markers such as ``[Chorus]`` are plain lyrics."""
    for raw in text.splitlines():
        stripped = raw.strip().lstrip("\ufeff")
        if stripped and not _META.match(stripped):
            return bool(_TIMES.match(stripped))
    return False


def _tag(seconds: float) -> str:
    centis = max(0, round(seconds * 100))
    return f"[{centis // 6000:02d}:{centis // 100 % 60:02d}.{centis % 100:02d}]"


def write_lrc(lines: Iterable[tuple[float, float, str]], tags: Mapping[str, str] | None = None) -> str:
    """``lines`` (start, end, text in seconds; end 0 or not after start: to the next line) as LRC text with
    ``[mm:ss.xx]`` tags, after the metadata ``tags``. A line's text is kept on one line; where a line ends before
    the next starts (or the last one ends), a time tag with no text marks its end."""
    out = [f"[{key}:{_SPACE.sub(' ', str(value)).replace(']', ')')}]" for key, value in (tags or {}).items()]
    ordered = sorted(lines, key=lambda line: line[0])
    for start, end, text in ordered:
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"times must be finite, got {start!r}, {end!r} for {text[:_SHOWN]!r}")
    for i, (start, end, text) in enumerate(ordered):
        out.append(f"{_tag(start)}{_SPACE.sub(' ', text).strip()}")
        if end > start and (i + 1 == len(ordered) or round(end * 100) < round(ordered[i + 1][0] * 100)):
            out.append(_tag(end))
    return "\n".join(out) + "\n"
