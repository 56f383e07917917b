"""A transcript as plain data: what the transcriber service returns, the orchestrator caches and records.

``Transcript`` (text, language, ``Segment``s with start/end seconds, the signal's length) is shared by the
transcriber's backends and the orchestrator (both depend on the core, neither on the other), so the JSON an
image's metadata and the orchestrator's cache hold has one definition: ``to_dict`` / ``from_dict``.
``lines()`` is how a transcript becomes lyrics: one line a segment, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the signal
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    segments: tuple[Segment, ...]
    seconds: float  # length of the signal

    @classmethod
    def of(cls, segments: list[Segment] | tuple[Segment, ...], language: str, seconds: float) -> Transcript:
        """The transcript of ``segments`` (already in order): their text joined with spaces."""
        return cls(" ".join(s.text for s in segments), language if segments else "", tuple(segments), seconds)

    def lines(self) -> str:
        """The segments as lyrics, one line each (what the lyrics window reads)."""
        return "\n".join(s.text for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text, "language": self.language, "seconds": round(self.seconds, 3),
            "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        segments = tuple(Segment(float(s["start"]), float(s["end"]), str(s["text"])) for s in data["segments"])
        return cls(str(data["text"]), str(data["language"]), segments, float(data["seconds"]))
