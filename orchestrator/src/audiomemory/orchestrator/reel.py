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

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from audiomemory.client import record_json
from audiomemory.orchestrator.config import REEL_SECTIONS_LIMIT
from audiomemory.orchestrator.decode import DecodedAudio, decode_audio
from audiomemory.orchestrator.front import AudioVector, pins_for
from audiomemory.orchestrator.fusion import Fused
from audiomemory.orchestrator.options import JobOptions, resolved_request, transcript_window
from audiomemory.orchestrator.record import build_record, embed_record
from audiomemory.orchestrator.stages import Encoded, Event, Painted, Painting, Served, stem_format
from audiomemory.runtime.errors import InvalidInput
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.compatibility import Infos
    from audiomemory.orchestrator.job import Job
    from audiomemory.orchestrator.pipeline import Pipeline, Upload

Stage = orchestrator_pb2.Stage
SECTIONS_LIMIT = REEL_SECTIONS_LIMIT
_UINT64 = 1 << 64
_NO_PIN = common_pb2.Pin()
Span = tuple[int, int]  # whole seconds, [start, end)


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
    start = time.perf_counter()
    opts, infos, window = prepared or pipeline.prepare(job, sent.image)
    heard = _listen(pipeline, job, opts, infos, window, receive, report)
    timings = {"audio": time.perf_counter() - start}
    report(Event(Stage.STAGE_SECTIONING, 0, 0, f"finding the sections of {heard.song.seconds:.1f} s"))
    spans = _find_sections(heard, plan)
    timings["sections"] = time.perf_counter() - start
    total = len(spans)
    report(Event(Stage.STAGE_SECTIONING, total, total, f"{total} section{'s' * (total != 1)}: "
                 + ", ".join(f"{a}-{b} s" for a, b in spans)))
    report(SectionsFound(spans, heard.song.seconds))
    size = _batch_size(pipeline, infos, settings)
    batches = [tuple(range(first, min(first + size, total))) for first in range(0, total, size)]
    encodings: dict[str, tuple[Served, Encoded]] = {}  # a window's encoding, made once
    for n, batch in enumerate(batches, start=1):
        sketches = [_sketch(pipeline, job, opts, infos, heard, spans, i, section_seed(opts.seed, i, plan),
                            encodings, report) for i in batch]
        for sketch, served, painted, steps in _paint_batch(pipeline, job, sketches, opts, report, total):
            report(_finish(pipeline, sent.image, opts, infos, heard, spans, sketch, served, painted, steps))
        timings[f"batch_{n}"] = time.perf_counter() - start
        job.check()
    report(Event(Stage.STAGE_DONE, total, total, f"{total} section{'s' * (total != 1)} painted"))
    return ReelResult(spans, heard.song.seconds, batches, timings)


def _painting_note(report: Report, index: int, total: int) -> Callable[[Event], None]:
    """``report`` with a section's generator progress saying which section it is."""
    def note(event: Event) -> None:
        if event.stage == Stage.STAGE_GENERATING:
            event = replace(event, message=f"section {index + 1}/{total}: {event.message}")
        report(event)

    return note


# ---------------------------------------------------------------------------------------------------------------
# INTERIM — the one place that stands in for the pieces written beside this one (issue 22), each to be replaced by
# the real call when it lands:
#   _plan            → sections.section_ask(msg.sections, msg.min_section_seconds, msg.max_sections, defaults)
#   _listen          → Pipeline.listen(..., need_bins=True): the one-second bins with the whole-song vector
#   _find_sections   → sections.find_sections(listened.audio.bins, ask) (here: the song split evenly)
#   _sketch          → Pipeline.sketch with the section's span and seed in its options (here: the whole song's
#                      words and audio vector for every section)
#   _finish          → Pipeline.finish(..., section=SectionRecord(index, spans))
#   _batch_size, _paint_batch → Stages.max_batch(infos) and one batched Generate (Painting.seeds, Painted.index)
#                      (here: one Generate a section)
# ---------------------------------------------------------------------------------------------------------------


def _plan(msg: orchestrator_pb2.ReelOptions, settings: ReelSettings) -> ReelPlan:
    top = msg.max_sections or settings.max_sections
    if not 2 <= top <= SECTIONS_LIMIT:
        raise InvalidInput(f"options.max_sections: 2..{SECTIONS_LIMIT} (0 = the orchestrator's default, "
                           f"{settings.max_sections}), got {msg.max_sections}")
    if msg.sections and not 2 <= msg.sections <= top:
        raise InvalidInput(f"options.sections: 0 (as many as the song has) or 2..{top} (max_sections), got "
                           f"{msg.sections}")
    shortest = msg.min_section_seconds or settings.min_section_seconds
    if not 1 <= shortest <= 1200:
        raise InvalidInput(f"options.min_section_seconds: 1..1200 (0 = the orchestrator's default, "
                           f"{settings.min_section_seconds}), got {msg.min_section_seconds}")
    return ReelPlan(msg.sections, shortest, top, msg.seed_per_section)


@dataclass
class _Heard:
    """What the front half leaves a reel: the song's facts, its upload, its audio (and words)."""

    song: DecodedAudio  # without its samples
    sha256: str
    upload_bytes: int
    audio: AudioVector
    window: str  # the whole song's lyrics window (of the transcript, when transcribed)


@dataclass
class _Sketch:
    index: int
    span: Span
    seed: int
    window: str
    words: str  # SectionRecord.words: where its words came from
    pooled: np.ndarray
    text_served: Served
    encoded: Encoded
    fused: Fused


def _listen(pipeline: Pipeline, job: Job, opts: JobOptions, infos: Infos, window: str,
            receive: Callable[[], Upload], report: Report) -> _Heard:
    """Upload, decode, the audio's pass (and transcript): ``Pipeline.run``'s first half."""
    limits = pipeline.limits
    report(Event(Stage.STAGE_UPLOADING, message="receiving the song file"))
    upload = receive()
    report(Event(Stage.STAGE_DECODING, message=f"decoding {len(upload.data)} bytes"))
    song = decode_audio(upload.data, filename=opts.filename, max_bytes=limits.max_upload_bytes,
                        max_seconds=limits.max_seconds, max_sample_rate=limits.max_sample_rate,
                        max_frames=upload.frames, grow=upload.grow)
    room, sha256, upload_bytes = upload.room, upload.sha256, len(upload.data)
    room.resize(song.samples.nbytes)
    del upload
    job.check()
    audio = pipeline.front.audio_vector(job, infos, song, sha256, opts.source == "transcribe",
                                        pins_for(infos, opts.pins), report)
    facts = song.without_samples()
    del song
    room.resize(0)
    if opts.source == "transcribe":
        assert audio.transcript is not None
        window = transcript_window(opts, audio.transcript, infos)
    return _Heard(facts, sha256, upload_bytes, audio, window)


def _find_sections(heard: _Heard, plan: ReelPlan) -> tuple[Span, ...]:
    """The song's whole seconds split evenly: ``plan.sections``, else as many of ``min_section_seconds`` as fit."""
    seconds = max(1, math.ceil(heard.song.seconds))
    fits = max(1, seconds // plan.min_section_seconds)
    if plan.sections > fits:
        raise InvalidInput(f"options.sections: {plan.sections} sections of at least {plan.min_section_seconds} s "
                           f"(min_section_seconds) need {plan.sections * plan.min_section_seconds} s; the song has "
                           f"{seconds} s")
    count = plan.sections or min(plan.max_sections, fits)
    edges = [round(seconds * i / count) for i in range(count + 1)]
    return tuple((edges[i], edges[i + 1]) for i in range(count))


def _sketch(pipeline: Pipeline, job: Job, opts: JobOptions, infos: Infos, heard: _Heard, spans: Sequence[Span],
            index: int, seed: int, encodings: dict[str, tuple[Served, Encoded]], report: Report) -> _Sketch:
    """Section ``index``'s words, encoded (one call for its window and the negative prompt, as a single image's;
    a window already encoded for another section is not encoded again), and fused with its span's audio vector."""
    total, window = len(spans), heard.window
    report(Event(Stage.STAGE_ENCODING_TEXT, index + 1, total, f"section {index + 1}/{total}: encoding its words"))
    if window not in encodings:
        encodings[window] = pipeline._encode(job, infos, window, opts)
    text_served, encoded = encodings[window]
    pooled = np.asarray(heard.audio.pooled, np.float32)
    report(Event(Stage.STAGE_FUSING, index + 1, total, f"section {index + 1}/{total}: fusing its audio"))
    fused = pipeline.fusion.apply(encoded.embeddings[0:1], pooled, opts.strength,
                                  projection_seed=opts.projection_seed, keep_bos=opts.keep_bos)
    return _Sketch(index, spans[index], seed, window, "salient", pooled, text_served, encoded, fused)


def _finish(pipeline: Pipeline, image: orchestrator_pb2.CreateImageOptions, opts: JobOptions, infos: Infos,
            heard: _Heard, spans: Sequence[Span], sketch: _Sketch, served: Served, painted: Painted,
            steps: int) -> SectionPainted:
    """The section's image with its record: a ``CreateImage`` request of its own (its span and seed)."""
    opts = replace(opts, seed=sketch.seed)
    request = resolved_request(image, opts)
    request.seed = sketch.seed
    request.span.start_s, request.span.end_s = sketch.span
    record = build_record(
        opts=opts, served={**heard.audio.served, "text_encoder": sketch.text_served, "generator": served},
        orchestrator=pipeline.identity(), profile=pipeline.limits.profile, song=heard.song, sha256=heard.sha256,
        upload_bytes=heard.upload_bytes, window=sketch.window, truncated=sketch.encoded.truncated,
        fusion=pipeline.fusion, fused=sketch.fused, painted=painted, denoising_steps=steps,
        audio=replace(heard.audio, pooled=sketch.pooled), stem_format=stem_format(infos), request=request,
        native_size=infos.generator.native_size,
    )
    record.section.CopyFrom(record_pb2.SectionRecord(
        index=sketch.index, spans=[orchestrator_pb2.Span(start_s=a, end_s=b) for a, b in spans], words=sketch.words))
    png = embed_record(painted.png, record)
    return SectionPainted(sketch.index, sketch.span, png, record, record_json(record))


def _batch_size(pipeline: Pipeline, infos: Infos, settings: ReelSettings) -> int:
    """Sections one ``Generate`` paints: the generator's ``max_batch`` (1 when it states none), at most the
    orchestrator's ``reel_max_batch`` when set."""
    most = 1  # one Generate a section, until the batched call is here
    return min(most, settings.max_batch) if settings.max_batch else most


def _paint_batch(pipeline: Pipeline, job: Job, sketches: Sequence[_Sketch], opts: JobOptions, report: Report,
                 total: int) -> Iterator[tuple[_Sketch, Served, Painted, int]]:
    """Each section of the batch painted, in order, as soon as it is."""
    for sketch in sketches:
        painting = Painting(sketch.fused.embeddings, sketch.encoded.embeddings[1:2], sketch.seed, opts.steps,
                            opts.guidance, opts.width, opts.height, opts.scheduler)
        served, painted, steps = pipeline._paint(job, painting, opts.pins.get("generator", _NO_PIN),
                                                 _painting_note(report, sketch.index, total))
        yield sketch, served, painted, steps
