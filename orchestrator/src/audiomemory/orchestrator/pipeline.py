"""The job, written once (docs/DESIGN.md §1): options → services → upload → decode → audio vector (and
transcript) ∥ text encoding → fuse → generate → record.

``Pipeline.run(job, sent, upload, report)`` runs one job against ``stages.Stages`` — the gRPC services
(``downstream.Downstream``) or the backends in this process (``audiomemory.bench.inprocess``) — and
returns the image with its record. It is two halves any job of a song reuses (a reel, DESIGN.md §11):
``listen`` (upload → decode → the audio vector, the one-second bins and the transcript, with the text
encoding of a window already known beside it) → ``Listened``; and ``paint_span`` (the image of one span, or
of the whole song: ``sketch`` — words, text encoding, the span's audio vector, fusion — then ``paint``, then
``finish`` — the record), so that a section painted within a reel is the image its span makes alone.
Progress goes to ``report`` (a side channel: the servicer relays it as ``StageEvent``s), never through the
return path. Concurrency is ``job.TaskGroup``'s: the text encoder's call runs beside the front half (unless
the lyrics are to be heard first), the front half's own calls run as tasks of their own; the job's
cancellation reaches all of them as one event.

What the image records comes from the calls that ran: each stage's ``Served`` header (replica identity
and resolved parameters), not a ``Describe`` that another replica may have answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from audiomemory.orchestrator.cache import AudioCache
from audiomemory.orchestrator.compatibility import NAMES, Infos
from audiomemory.orchestrator.decode import DecodedAudio, decode_audio
from audiomemory.orchestrator.front import AudioVector, FrontHalf, pins_for
from audiomemory.orchestrator.fusion import Fused, Fusion
from audiomemory.orchestrator.job import Job, TaskGroup
from audiomemory.orchestrator.options import (
    JobOptions,
    Words,
    check_with_services,
    parse_options,
    resolved_request,
    span_words,
)
from audiomemory.orchestrator.record import build_record
from audiomemory.orchestrator.stages import (
    Encoded,
    Event,
    Painted,
    Painting,
    Pin,
    Queued,
    Served,
    Stages,
    Step,
    queued,
    stem_format,
)
from audiomemory.orchestrator.timebins import Span, bin_count, check_span
from audiomemory.runtime.errors import AudioMemoryError, FailedPrecondition
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.reel import ReelPlan, ReelResult, ReelSettings, SectionPainted, SectionsFound

T = TypeVar("T")
Stage = orchestrator_pb2.Stage
Report = Callable[[Event], None]
_NO_PIN = common_pb2.Pin()


class Room(Protocol):
    """The job budget's room for the decoded song (``gate.Turn``; nothing in process)."""

    def resize(self, weight: int) -> None: ...


@dataclass
class Upload:
    """The song file as received: its bytes, their SHA-256, the room its decoded song may take and how to
    ask for more (``upload.receive`` makes one from the request stream)."""

    data: bytes | bytearray
    sha256: str
    room: Room
    frames: int | None = None  # decoded frames the room holds (None: what the header declares)
    grow: Callable[[int], bool] | None = None


@dataclass(frozen=True)
class Limits:
    """The orchestrator's settings a job follows."""

    max_upload_bytes: int
    max_seconds: float
    max_sample_rate: int
    max_lyrics_chars: int
    profile: str = ""


@dataclass
class Result:
    png: bytes  # as painted (the servicer adds the record)
    record: record_pb2.ImageRecord
    pooled: np.ndarray  # the audio vector a
    fused: np.ndarray  # the prompt embeddings the generator got
    timings: dict[str, float] = field(default_factory=dict)  # seconds until each stage ended


@dataclass
class Listened:
    """A song decoded and heard — what every image of it is painted from (``Pipeline.listen``)."""

    song: DecodedAudio  # its facts (the waveform is let go once the audio vector is made)
    sha256: str
    upload_bytes: int
    audio: AudioVector  # the whole-song vector, the one-second bins, the transcript
    start: float  # time.perf_counter() when the job started
    timings: dict[str, float] = field(default_factory=dict)  # seconds from ``start`` until each stage ended

    def pooled(self, span: Span | None) -> np.ndarray:
        """The audio vector of ``span`` (from the bins), or of the whole song (``None``: ``a`` as always)."""
        if span is None:
            return self.audio.pooled
        if self.audio.bins is None:
            raise FailedPrecondition("options.span: the audio encoder did not say its hop (hop_seconds in its call "
                                     "header), so this song has no time bins to pool a span from")
        return self.audio.bins.pooled(span)

    def mark(self, stage: str) -> None:
        self.timings[stage] = time.perf_counter() - self.start


@dataclass(frozen=True)
class Sketch:
    """One image up to the generator (``Pipeline.sketch``): its words, its audio vector, the fused prompt."""

    opts: JobOptions  # its options (a reel's section: its span and seed)
    words: Words
    text_served: Served
    encoded: Encoded  # [lyrics window, negative prompt]
    pooled: np.ndarray  # the audio vector the fusion read
    fused: Fused
    painting: Painting


class Pipeline:
    def __init__(self, stages: Stages, cache: AudioCache, fusion: Fusion, limits: Limits,
                 identity: Callable[[], common_pb2.ModelInfo]) -> None:
        self.stages = stages
        self.fusion = fusion
        self.limits = limits
        self.identity = identity  # the orchestrator's own ModelInfo, recorded as served["orchestrator"]
        self.front = FrontHalf(stages, cache)

    def prepare(self, job: Job, sent: orchestrator_pb2.CreateImageOptions) -> tuple[JobOptions, Infos, str]:
        """The options checked, the services asked: all before the upload, so a bad job costs nothing."""
        opts = parse_options(sent, self.fusion, self.limits.max_lyrics_chars, self.limits.max_seconds)
        infos = self.stages.describe(job)
        return opts, infos, check_with_services(opts, infos)

    def run(
        self, job: Job, sent: orchestrator_pb2.CreateImageOptions, receive: Callable[[], Upload], report: Report,
        prepared: tuple[JobOptions, Infos, str] | None = None,
    ) -> Result:
        """One image: of the whole song, or of ``sent.span``."""
        opts, infos, window = prepared or self.prepare(job, sent)
        early = None if opts.source == "transcribe" else window
        listened, encoded = self.listen(job, opts, infos, receive, report, early=early)
        return self.paint_span(job, sent, opts, infos, listened, report,
                               early=None if encoded is None or early is None else (early, encoded))

    def listen(
        self, job: Job, opts: JobOptions, infos: Infos, receive: Callable[[], Upload], report: Report, *,
        early: str | None = None, need_bins: bool | None = None,
    ) -> tuple[Listened, tuple[Served, Encoded] | None]:
        """Upload → decode (``opts.span`` checked against the song's length) → the audio vector, the bins and
        the transcript (``FrontHalf.audio_vector``), with the text encoder's call for ``early`` (a lyrics window
        known before the song is heard) beside it. ``need_bins`` (default: when ``opts.span`` is set) takes a
        cache entry without bins as a miss."""
        start = time.perf_counter()
        report(Event(Stage.STAGE_UPLOADING, message="receiving the song file"))
        upload = receive()
        report(Event(Stage.STAGE_DECODING, message=f"decoding {len(upload.data)} bytes"))
        song = decode_audio(upload.data, filename=opts.filename, max_bytes=self.limits.max_upload_bytes,
                            max_seconds=self.limits.max_seconds, max_sample_rate=self.limits.max_sample_rate,
                            max_frames=upload.frames, grow=upload.grow)
        room, sha256, upload_bytes = upload.room, upload.sha256, len(upload.data)
        room.resize(song.samples.nbytes)
        del upload  # the file's bytes (a WAV's are the size of the song) are not kept while the job goes on
        if opts.span is not None:
            check_span(opts.span, bin_count(song.seconds))
        timings = {"decode": time.perf_counter() - start}
        job.check()
        need = opts.span is not None if need_bins is None else need_bins
        with TaskGroup(job, "job") as tasks:
            encoding = None if early is None else tasks.spawn(self.encode, job, infos, early, opts)
            audio = self.front.audio_vector(job, infos, song, sha256, opts.source == "transcribe",
                                            pins_for(infos, opts.pins), report, need)
            timings["audio"] = time.perf_counter() - start
            song_facts = song.without_samples()  # the waveform's room goes to the next job while this one paints
            del song
            room.resize(0)
            report(Event(Stage.STAGE_ENCODING_TEXT, message="encoding lyrics and negative prompt"))
        job.check()  # (the group has joined the text encoder's task)
        listened = Listened(song_facts, sha256, upload_bytes, audio, start, timings)
        return listened, (encoding() if encoding is not None else None)

    def paint_span(
        self, job: Job, sent: orchestrator_pb2.CreateImageOptions, opts: JobOptions, infos: Infos,
        listened: Listened, report: Report, *, early: tuple[str, tuple[Served, Encoded]] | None = None,
        section: record_pb2.SectionRecord | None = None,
    ) -> Result:
        """The image of ``opts.span`` (``None``: the whole song) with ``opts.seed``: ``sketch`` → ``paint`` →
        ``finish``. A reel's section painted through here is the image the same span makes alone."""
        sketch = self.sketch(job, opts, infos, listened, report, early=early)
        gen_served, painted, denoising_steps = self.paint(job, sketch.painting, opts.pins.get("generator", _NO_PIN),
                                                          report)
        listened.mark("generate")
        return self.finish(sent, infos, listened, sketch, gen_served, painted, denoising_steps, section=section)

    def sketch(
        self, job: Job, opts: JobOptions, infos: Infos, listened: Listened, report: Report, *,
        early: tuple[str, tuple[Served, Encoded]] | None = None,
    ) -> Sketch:
        """One image up to the generator: its words (``options.span_words``) encoded (``early``'s encoding when it
        is of the same window), its audio vector (the span's bins, or ``a``), fused (§2), and what to paint."""
        transcript = listened.audio.transcript
        if opts.source == "transcribe":
            assert transcript is not None
        words = span_words(opts, infos, transcript)
        if early is not None and early[0] == words.window:
            text_served, encoded = early[1]
        else:
            text_served, encoded = self.encode(job, infos, words.window, opts)
        listened.mark("encode_text")
        report(Event(Stage.STAGE_FUSING, message=f"fusing audio into text, strength {opts.strength:g}"))
        pooled = listened.pooled(opts.span)
        fused = self.fusion.apply(encoded.embeddings[0:1], pooled, opts.strength,
                                  projection_seed=opts.projection_seed, keep_bos=opts.keep_bos,
                                  stem_weights=opts.stem_weights)
        listened.mark("fuse")
        painting = Painting(fused.embeddings, encoded.embeddings[1:2], opts.seed, opts.steps, opts.guidance,
                            opts.width, opts.height, opts.scheduler)
        return Sketch(opts, words, text_served, encoded, pooled, fused, painting)

    def finish(
        self, sent: orchestrator_pb2.CreateImageOptions, infos: Infos, listened: Listened, sketch: Sketch,
        gen_served: Served, painted: Painted, denoising_steps: int, *,
        section: record_pb2.SectionRecord | None = None,
    ) -> Result:
        """The painted image with its record: the request resolved with the sketch's own options (its span and
        seed), so that sending it again alone makes the same image; a span's record says where its words came
        from (``section.words``; a reel passes its ``SectionRecord`` with the index and spans filled in)."""
        opts = sketch.opts
        served = {**listened.audio.served, "text_encoder": sketch.text_served, "generator": gen_served}
        if opts.span is not None:
            section = section if section is not None else record_pb2.SectionRecord()
            section.words = sketch.words.source
        record = build_record(
            opts=opts, served=served, orchestrator=self.identity(), profile=self.limits.profile, song=listened.song,
            sha256=listened.sha256, upload_bytes=listened.upload_bytes, window=sketch.words.window,
            truncated=sketch.encoded.truncated, fusion=self.fusion, fused=sketch.fused, painted=painted,
            denoising_steps=denoising_steps, audio=listened.audio, stem_format=stem_format(infos),
            request=resolved_request(sent, opts), native_size=infos.generator.native_size, pooled=sketch.pooled,
            section=section,
        )
        return Result(painted.png, record, sketch.pooled, sketch.fused.embeddings, listened.timings)

    def reel(
        self, job: Job, sent: orchestrator_pb2.ReelOptions, plan: ReelPlan, settings: ReelSettings,
        receive: Callable[[], Upload], report: Callable[[Event | SectionsFound | SectionPainted], None],
        prepared: tuple[JobOptions, Infos, str] | None = None,
    ) -> ReelResult:
        """The memory reel (``reel.run_reel``): the front half once, the sections, their images in batches, each
        handed to ``report`` as it is painted."""
        from audiomemory.orchestrator.reel import run_reel

        return run_reel(self, job, sent, plan, settings, receive, report, prepared)

    def encode(self, job: Job, infos: Infos, window: str, opts: JobOptions) -> tuple[Served, Encoded]:
        """The text encoder's call for [lyrics window, negative prompt]."""
        text = infos.text_encoder
        return _served_then(self.stages.encode(job, [window, opts.negative_prompt],
                                               (text.max_length, text.hidden_size),
                                               opts.pins.get("text_encoder", _NO_PIN)), "text_encoder", Encoded)

    def paint(self, job: Job, painting: Painting, pin: Pin, report: Report) -> tuple[Served, Painted, int]:
        """One image: the generator's header, the image and the denoising calls it ran (``paint_each``, read to
        the stream's end: the call ends OK, not cancelled by a reader that left after the image)."""
        painted = list(self.paint_each(job, painting, pin, report))
        if not painted:
            raise AudioMemoryError("the generator's stream ended without an image")  # the stage raises first
        return painted[0]

    def paint_each(
        self, job: Job, painting: Painting, pin: Pin, report: Report
    ) -> Iterator[tuple[Served, Painted, int]]:
        """The generator's steps as steps of the steps it resolved (a scheduler may run an extra warm-up call:
        PNDM runs 31 for 30); yields its header, each image (a batch's in order) and the denoising calls it ran."""
        served: Served | None = None
        asked, total = painting.steps, 0
        for event in self.stages.generate(job, painting, pin):
            if isinstance(event, Served):
                served = event
                asked = int(event.resolved.get("steps") or painting.steps or 0)
                report(Event(Stage.STAGE_GENERATING, 0, asked, "generating"))
            elif isinstance(event, Queued):
                report(queued(NAMES["generator"], event.position))
            elif isinstance(event, Step):
                total = event.total
                step = min(asked, round(event.step * asked / max(event.total, 1)))
                note = "" if event.attempt == 1 else \
                    f" (replica lost; retrying (attempt {event.attempt}/{event.attempts}))"
                report(Event(Stage.STAGE_GENERATING, step, asked, f"step {step}/{asked}{note}"))
            elif isinstance(event, Painted) and served is not None:
                yield served, event, total


def _served_then(events: Iterator[object], kind: str, want: type[T]) -> tuple[Served, T]:
    """A one-result stage's header and result."""
    served = next(events, None)
    result = next(events, None)
    if not isinstance(served, Served) or not isinstance(result, want):
        raise AudioMemoryError(f"the {NAMES[kind]}'s stream did not bring its header and result")
    return served, result

