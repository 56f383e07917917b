"""A job's progress as its ``StageEvent``s tell it, for any display (the CLI's bars, the web page's).

The song's half of a job (separated, embedded and, when asked, transcribed: they run together) counts
as one stretch, each stage an equal share of it; the denoising steps are the other stretch. A display
draws what ``JobState`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audiomemory.v1 import orchestrator_pb2

STAGE_NAMES: dict[int, str] = {
    v: k.removeprefix("STAGE_").lower().replace("_", " ") for k, v in orchestrator_pb2.Stage.items()
}
_SONG_STAGES = (orchestrator_pb2.STAGE_SEPARATING, orchestrator_pb2.STAGE_EMBEDDING)


def stage_name(stage: int) -> str:
    return STAGE_NAMES.get(stage, "?")


@dataclass
class JobState:
    """What a job's events have said so far: its stage, how far through the song and the steps it is."""

    stage: int | None = None  # the last stage other than STAGE_QUEUED
    message: str = ""  # the last event's note
    queued: str = ""  # the place in line, while the job waits at a busy service ("" when it does not)
    parts: dict[int, float] = field(default_factory=lambda: dict.fromkeys(_SONG_STAGES, 0.0))
    song_started: bool = False
    step: int = 0
    steps: int = 0  # the steps asked for, once generation has started
    seen: set[int] = field(default_factory=set)  # the stages (other than STAGE_QUEUED) events have named

    def update(self, event: orchestrator_pb2.StageEvent) -> bool:
        """Take one event; whether it is the first of its stage. The song's stages run together and
        their events interleave, so a stage starts once however often the events alternate."""
        self.message = event.message
        if event.stage == orchestrator_pb2.STAGE_QUEUED:
            self.queued = event.message
            return False
        self.queued = ""
        new = event.stage not in self.seen
        self.seen.add(event.stage)
        self.stage = event.stage
        if event.stage == orchestrator_pb2.STAGE_TRANSCRIBING:
            self.parts.setdefault(event.stage, 0.0)
        if event.stage in self.parts and (event.total or event.cache_hit):
            self.parts[event.stage] = 1.0 if event.cache_hit else min(1.0, event.current / event.total)
            if event.cache_hit and event.stage == orchestrator_pb2.STAGE_EMBEDDING:
                self.parts[orchestrator_pb2.STAGE_SEPARATING] = 1.0  # a cached vector needs no separation
            self.song_started = True
        elif event.stage == orchestrator_pb2.STAGE_GENERATING and event.total:
            self.steps = event.total
            self.step = max(self.step, event.current)
        return new

    @property
    def song_fraction(self) -> float:
        """How much of the song is separated, embedded (and transcribed, when asked), 0..1."""
        return sum(self.parts.values()) / len(self.parts)

    @property
    def generating(self) -> bool:
        return self.stage == orchestrator_pb2.STAGE_GENERATING and self.steps > 0

    def describe(self) -> str:
        """One line for a person: the stage and its note, or the place in line."""
        if self.queued:
            return f"queued: {self.queued}"
        if self.stage is None:
            return "starting"
        detail = f" ({self.message})" if self.message else ""
        return f"{stage_name(self.stage)}{detail}"
