"""Which part of the lyrics CLIP gets to read (DESIGN.md §3).

CLIP sees 77 tokens; a song's lyrics are far longer, and what a listener remembers is the hook.

- ``salient_window(lyrics)`` (default): strip section markers (``[Chorus]``), LRC tags and
  timestamps and blank lines; normalise lines (case, punctuation, whitespace) for counting; order
  the distinct lines by count (descending), ties by first appearance; join with ``", "``. Each
  distinct line is written as it first appeared (trimmed, inner whitespace collapsed).
- ``head_window(lyrics)``: the lyrics as written; the text encoder's tokenizer truncates them.
- ``lyrics_window(lyrics, mode)``: dispatch on ``"salient"`` / ``"head"`` (``""`` = salient).
"""

from __future__ import annotations

import re
import unicodedata

from audiomemory.runtime.errors import InvalidInput

WINDOWS: tuple[str, ...] = ("salient", "head")

# LRC line timestamps [mm:ss], [mm:ss.xx], [mm:ss:xx], possibly several per line, and the
# enhanced-LRC word timestamps <mm:ss.xx>.
_TIMESTAMP = re.compile(r"[\[<]\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?[\]>]")
# A line that is nothing but one bracketed tag: [Chorus], [Verse 2: Artist], [ar:Someone], (Chorus)
# is left alone because parentheses are sung ad-libs far more often than markers.
_MARKER_LINE = re.compile(r"^\s*\[[^\[\]]*\]\s*$")
_SPACE = re.compile(r"\s+")


def _clean_lines(lyrics: str) -> list[str]:
    lines: list[str] = []
    for raw in lyrics.splitlines():
        if _MARKER_LINE.match(raw):
            continue
        line = _SPACE.sub(" ", _TIMESTAMP.sub(" ", raw)).strip()
        if line and not _MARKER_LINE.match(line):
            lines.append(line)
    return lines


def normalise(line: str) -> str:
    """The counting key: case-folded, punctuation removed, whitespace collapsed."""
    kept = "".join(
        ch if not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in line.casefold()
    )
    return _SPACE.sub(" ", kept).strip()


def salient_window(lyrics: str) -> str:
    """Distinct lines, most repeated first (ties: first appearance), joined with ``", "``."""
    counts: dict[str, int] = {}
    first_form: dict[str, str] = {}
    for line in _clean_lines(lyrics):
        key = normalise(line)
        if not key:
            continue  # a line of punctuation only carries nothing to count
        counts[key] = counts.get(key, 0) + 1
        first_form.setdefault(key, line)
    # dicts keep insertion order = first appearance; sorted() is stable, so ties keep it.
    ordered = sorted(counts, key=lambda k: -counts[k])
    return ", ".join(first_form[k] for k in ordered)


def head_window(lyrics: str) -> str:
    """The lyrics as written (the tokenizer truncates them to its token length)."""
    return lyrics


def lyrics_window(lyrics: str, mode: str = "salient") -> str:
    """Apply the named window; an unknown name is INVALID_ARGUMENT listing the known ones."""
    if mode in ("", "salient"):
        return salient_window(lyrics)
    if mode == "head":
        return head_window(lyrics)
    raise InvalidInput(f"lyrics_window must be one of {list(WINDOWS)}, got {mode!r}")
