"""The memory reel's job (docs/DESIGN.md §11): one song, its sections found from its own audio, one image a
section, each streamed as it is painted.

- ``parse_reel_options(msg, settings)`` — what is the reel's own, checked before the job takes a slot
  (INVALID_ARGUMENT naming the field, the limit and what came): ``sections`` 0 or 2..the maximum,
  ``max_sections`` 2..the orchestrator's limit, ``min_section_seconds``, ``image.span`` unset (the reel sets
  each section's). The image options are every section's, checked as ``CreateImage``'s are, once it has a slot.
- ``run_reel(pipeline, job, sent, plan, settings, receive, report)`` — the job: the front half **once** (upload,
  decode, the audio's pass and, when asked, the transcript), the sections, then the sections in batches of at
  most the generator's ``max_batch`` (and the orchestrator's ``reel_max_batch``): for each section its words
  and its span's audio vector → text encoding → fusion; the batch painted in one ``Generate`` (one generator
  slot at a time: the batches run one after another); each image recorded (``ImageRecord.section``) and handed
  to ``report`` as soon as it is painted. Progress (``Event``), the sections found (``SectionsFound``) and the
  images (``SectionPainted``) travel on the one side channel, in order.

A section's record is a ``CreateImage`` request of its own (the image options with the section's span and seed),
so any section image can be made alone and compared with the reel's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from audiomemory.client import record_json
from audiomemory.orchestrator.options import JobOptions, span_words
from audiomemory.orchestrator.record import embed_record
from audiomemory.orchestrator.sections import MAX_SECTIONS, SectionAsk, find_sections, section_ask
from audiomemory.orchestrator.stages import Encoded, Event, Served
from audiomemory.orchestrator.timebins import Span
from audiomemory.runtime.errors import AudioMemoryError, FailedPrecondition, InvalidInput
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.compatibility import Infos
    from audiomemory.orchestrator.job import Job
    from audiomemory.orchestrator.pipeline import Listened, Pipeline, Sketch, Upload

Stage = orchestrator_pb2.Stage
SECTIONS_LIMIT = MAX_SECTIONS
_UINT64 = 1 << 64
_NO_PIN = common_pb2.Pin()


@dataclass(frozen=True)
class ReelSettings:
    """The orchestrator's reel settings (``OrchestratorConfig``: ``max_sections``, ``min_section_seconds``,
    ``reel_max_batch``)."""

    max_sections: int = 8  # a request's default
    min_section_seconds: int = 8  # a request's default
    max_batch: int = 0  # sections in one Generate at most; 0 = the generator's max_batch


@dataclass(frozen=True)
class ReelPlan:
    """Validated ``ReelOptions`` (the image options apart) with the defaults resolved."""

    sections: int  # 0 = as many as the song has, at most max_sections
    min_section_seconds: int
    max_sections: int
    seed_per_section: bool


@dataclass(frozen=True)
class SectionsFound:
    spans: tuple[Span, ...]
    seconds: float  # the song's length


@dataclass(frozen=True)
class SectionPainted:
    index: int
    span: Span
    png: bytes  # with its record
    record: record_pb2.ImageRecord
    metadata_json: str


@dataclass
class ReelResult:
    spans: tuple[Span, ...]
    seconds: float
    batches: list[tuple[int, ...]]  # the sections each Generate painted
    timings: dict[str, float] = field(default_factory=dict)  # seconds from the start until each stage ended


Report = Callable[[Event | SectionsFound | SectionPainted], None]


def parse_reel_options(msg: orchestrator_pb2.ReelOptions, settings: ReelSettings) -> ReelPlan:
    """The reel's own options, or INVALID_ARGUMENT naming the field, the limit and what came."""
    if msg.image.HasField("span"):
        raise InvalidInput(f"options.image.span: must be unset (the reel sets each section's span), got "
                           f"[{msg.image.span.start_s}, {msg.image.span.end_s})")
    return _plan(msg, settings)


def section_seed(seed: int, index: int, plan: ReelPlan) -> int:
    """Section ``index``'s seed: the image's seed, or seed + index with ``seed_per_section``."""
    return (seed + index) % _UINT64 if plan.seed_per_section else seed


def run_reel(
    pipeline: Pipeline, job: Job, sent: orchestrator_pb2.ReelOptions, plan: ReelPlan, settings: ReelSettings,
    receive: Callable[[], Upload], report: Report, prepared: tuple[JobOptions, Infos, str] | None = None,
) -> ReelResult:
    opts, infos, window = prepared or pipeline.prepare(job, sent.image)
    early = None if opts.source == "transcribe" else window
    listened, encoded = pipeline.listen(job, opts, infos, receive, report, early=early, need_bins=True)
    bins = listened.audio.bins
    if bins is None:
        raise FailedPrecondition("the audio encoder did not say its hop (hop_seconds in its call header), so this "
                                 "song has no time bins to find its sections in")
    report(Event(Stage.STAGE_SECTIONING, 0, 0, f"finding the sections of {listened.song.seconds:.1f} s"))
    spans = tuple(find_sections(bins, SectionAsk(plan.sections, plan.min_section_seconds, plan.max_sections)))
    listened.mark("sections")
    total = len(spans)
    report(Event(Stage.STAGE_SECTIONING, total, total, f"{total} section{'s' * (total != 1)}: "
                 + ", ".join(f"{a}-{b} s" for a, b in spans)))
    report(SectionsFound(spans, listened.song.seconds))
    size = _batch_size(pipeline, infos, settings)
    batches = [tuple(range(first, min(first + size, total))) for first in range(0, total, size)]
    # A window's text encoding, made once (the same call, so the same bits, as an image of that span alone).
    encodings: dict[str, tuple[Served, Encoded]] = {} if early is None or encoded is None else {early: encoded}
    for n, batch in enumerate(batches, start=1):
        sketches = [_sketch(pipeline, job, replace(opts, span=spans[i], seed=section_seed(opts.seed, i, plan)),
                            infos, listened, encodings, _section_note(report, (i,), total)) for i in batch]
        _paint_batch(pipeline, job, sent.image, infos, listened, sketches, spans, batch,
                     _section_note(report, batch, total), report)
        listened.mark(f"batch_{n}")
        job.check()
    report(Event(Stage.STAGE_DONE, total, total, f"{total} section{'s' * (total != 1)} painted"))
    return ReelResult(spans, listened.song.seconds, batches, listened.timings)


def _sketch(pipeline: Pipeline, job: Job, opts: JobOptions, infos: Infos, listened: Listened,
            encodings: dict[str, tuple[Served, Encoded]], report: Callable[[Event], None]) -> Sketch:
    """A section up to the generator (``Pipeline.sketch``: its words, its span's vector, the fusion), its window's
    encoding taken from another section's when they read the same window."""
    window = span_words(opts, infos, listened.audio.transcript).window
    sketch = pipeline.sketch(job, opts, infos, listened, report,
                             early=(window, encodings[window]) if window in encodings else None)
    encodings[sketch.words.window] = (sketch.text_served, sketch.encoded)
    return sketch


def _paint_batch(pipeline: Pipeline, job: Job, image: orchestrator_pb2.CreateImageOptions, infos: Infos,
                 listened: Listened, sketches: Sequence[Sketch], spans: Sequence[Span], batch: Sequence[int],
                 note: Callable[[Event], None], report: Report) -> None:
    """The batch's sections painted in one ``Generate`` (item i is the image its prompt and seed paint alone),
    each recorded (``Pipeline.finish``: a ``CreateImage`` request of its own) and reported as soon as it comes."""
    painting = sketches[0].painting
    if len(sketches) > 1:
        negatives = [s.painting.negative_prompt_embeds for s in sketches]
        shared = all(np.array_equal(negatives[0], other) for other in negatives[1:])
        painting = replace(painting, prompt_embeds=np.concatenate([s.painting.prompt_embeds for s in sketches]),
                           negative_prompt_embeds=negatives[0] if shared else np.concatenate(negatives),
                           seeds=tuple(s.opts.seed for s in sketches))
    records = [orchestrator_pb2.Span(start_s=a, end_s=b) for a, b in spans]
    painted_items = 0
    for served, painted, steps in pipeline.paint_each(job, painting, sketches[0].opts.pins.get("generator", _NO_PIN),
                                                      note):
        index = batch[painted.index]
        section = record_pb2.SectionRecord(index=index, spans=records)
        result = pipeline.finish(image, infos, listened, sketches[painted.index], served, painted, steps,
                                 section=section)
        png = embed_record(result.png, result.record)
        report(SectionPainted(index, spans[index], png, result.record, record_json(result.record)))
        painted_items += 1
    if painted_items != len(sketches):
        raise AudioMemoryError(f"the generator's stream ended after {painted_items} of the batch's "
                               f"{len(sketches)} images")


def _section_note(report: Report, sections: Sequence[int], total: int) -> Callable[[Event], None]:
    """``report`` with a section's (or a batch's) progress saying which sections it is of."""
    which = f"section {sections[0] + 1}" if len(sections) == 1 else f"sections {sections[0] + 1}-{sections[-1] + 1}"

    def note(event: Event) -> None:
        if event.stage in (Stage.STAGE_GENERATING, Stage.STAGE_ENCODING_TEXT, Stage.STAGE_FUSING):
            event = replace(event, message=f"{which}/{total}: {event.message}")
        report(event)

    return note


def _plan(msg: orchestrator_pb2.ReelOptions, settings: ReelSettings) -> ReelPlan:
    ask = section_ask(msg.sections, msg.min_section_seconds, msg.max_sections,
                      default_min=settings.min_section_seconds, default_max=settings.max_sections)
    return ReelPlan(ask.count, ask.min_seconds, ask.max_sections, msg.seed_per_section)


def _batch_size(pipeline: Pipeline, infos: Infos, settings: ReelSettings) -> int:
    """Sections one ``Generate`` paints: what the generator takes through this adapter (``Stages.max_batch``), at
    most the orchestrator's ``reel_max_batch`` when set."""
    most = max(1, pipeline.stages.max_batch(infos))
    return min(most, settings.max_batch) if settings.max_batch else most
