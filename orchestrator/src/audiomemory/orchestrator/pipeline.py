"""The job, written once (docs/DESIGN.md §1): options → services → upload → decode → audio vector (and
transcript) ∥ text encoding → fuse → generate → record.

``Pipeline.run(job, sent, upload, report)`` runs one job against ``stages.Stages`` — the gRPC services
(``downstream.Downstream``) or the backends in this process (``audiomemory.bench.inprocess``) — and
returns the image with its record. Progress goes to ``report`` (a side channel: the servicer relays it as
``StageEvent``s), never through the return path. Concurrency is ``job.TaskGroup``'s: the text encoder's
call runs beside the front half (unless the lyrics are to be heard first), the front half's own calls
run as tasks of their own; the job's cancellation reaches all of them as one event.

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
from audiomemory.orchestrator.decode import decode_audio
from audiomemory.orchestrator.front import FrontHalf, pins_for
from audiomemory.orchestrator.fusion import Fusion
from audiomemory.orchestrator.job import Job, TaskGroup
from audiomemory.orchestrator.options import (
    JobOptions,
    check_with_services,
    parse_options,
    resolved_request,
    transcript_window,
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
from audiomemory.runtime.errors import AudioMemoryError
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
        opts = parse_options(sent, self.fusion, self.limits.max_lyrics_chars)
        infos = self.stages.describe(job)
        return opts, infos, check_with_services(opts, infos)

    def run(
        self, job: Job, sent: orchestrator_pb2.CreateImageOptions, receive: Callable[[], Upload], report: Report,
        prepared: tuple[JobOptions, Infos, str] | None = None,
    ) -> Result:
        start, timings = time.perf_counter(), {}
        opts, infos, window = prepared or self.prepare(job, sent)
        report(Event(Stage.STAGE_UPLOADING, message="receiving the song file"))
        upload = receive()
        report(Event(Stage.STAGE_DECODING, message=f"decoding {len(upload.data)} bytes"))
        song = decode_audio(upload.data, filename=opts.filename, max_bytes=self.limits.max_upload_bytes,
                            max_seconds=self.limits.max_seconds, max_sample_rate=self.limits.max_sample_rate,
                            max_frames=upload.frames, grow=upload.grow)
        room, sha256, upload_bytes = upload.room, upload.sha256, len(upload.data)
        room.resize(song.samples.nbytes)
        del upload  # the file's bytes (a WAV's are the size of the song) are not kept while the job goes on
        timings["decode"] = time.perf_counter() - start
        job.check()
        with TaskGroup(job, "job") as tasks:
            encoding = None if opts.source == "transcribe" else tasks.spawn(self._encode, job, infos, window, opts)
            audio = self.front.audio_vector(job, infos, song, sha256, encoding is None,
                                            pins_for(infos, opts.pins), report)
            timings["audio"] = time.perf_counter() - start
            song_facts = song.without_samples()  # the waveform's room goes to the next job while this one paints
            del song
            room.resize(0)
            report(Event(Stage.STAGE_ENCODING_TEXT, message="encoding lyrics and negative prompt"))
        job.check()  # (the group has joined the text encoder's task)
        if encoding is not None:
            text_served, encoded = encoding()
        else:  # the words heard are the lyrics
            assert audio.transcript is not None
            window = transcript_window(opts, audio.transcript, infos)
            text_served, encoded = self._encode(job, infos, window, opts)
        timings["encode_text"] = time.perf_counter() - start
        report(Event(Stage.STAGE_FUSING, message=f"fusing audio into text, strength {opts.strength:g}"))
        fused = self.fusion.apply(encoded.embeddings[0:1], audio.pooled, opts.strength,
                                  projection_seed=opts.projection_seed, keep_bos=opts.keep_bos)
        timings["fuse"] = time.perf_counter() - start
        painting = Painting(fused.embeddings, encoded.embeddings[1:2], opts.seed, opts.steps, opts.guidance,
                            opts.width, opts.height, opts.scheduler)
        gen_served, painted, denoising_steps = self._paint(job, painting, opts.pins.get("generator", _NO_PIN), report)
        timings["generate"] = time.perf_counter() - start
        served = {**audio.served, "text_encoder": text_served, "generator": gen_served}
        record = build_record(
            opts=opts, served=served, orchestrator=self.identity(), profile=self.limits.profile, song=song_facts,
            sha256=sha256, upload_bytes=upload_bytes, window=window, truncated=encoded.truncated,
            fusion=self.fusion, fused=fused, painted=painted, denoising_steps=denoising_steps, audio=audio,
            stem_format=stem_format(infos), request=resolved_request(sent, opts),
            native_size=infos.generator.native_size,
        )
        return Result(painted.png, record, audio.pooled, fused.embeddings, timings)

    def reel(
        self, job: Job, sent: orchestrator_pb2.ReelOptions, plan: ReelPlan, settings: ReelSettings,
        receive: Callable[[], Upload], report: Callable[[Event | SectionsFound | SectionPainted], None],
        prepared: tuple[JobOptions, Infos, str] | None = None,
    ) -> ReelResult:
        """The memory reel (``reel.run_reel``): the front half once, the sections, their images in batches, each
        handed to ``report`` as it is painted."""
        from audiomemory.orchestrator.reel import run_reel

        return run_reel(self, job, sent, plan, settings, receive, report, prepared)

    def _encode(self, job: Job, infos: Infos, window: str, opts: JobOptions) -> tuple[Served, Encoded]:
        """The text encoder's call for [lyrics window, negative prompt]."""
        text = infos.text_encoder
        return _served_then(self.stages.encode(job, [window, opts.negative_prompt],
                                               (text.max_length, text.hidden_size),
                                               opts.pins.get("text_encoder", _NO_PIN)), "text_encoder", Encoded)

    def _paint(self, job: Job, painting: Painting, pin: Pin, report: Report) -> tuple[Served, Painted, int]:
        """The generator's steps as steps of the steps it resolved (a scheduler may run an extra warm-up call:
        PNDM runs 31 for 30); returns its header, the image and the denoising calls it ran."""
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
                return served, event, total
        raise AudioMemoryError("the generator's stream ended without an image")  # the stage raises first


def _served_then(events: Iterator[object], kind: str, want: type[T]) -> tuple[Served, T]:
    """A one-result stage's header and result."""
    served = next(events, None)
    result = next(events, None)
    if not isinstance(served, Served) or not isinstance(result, want):
        raise AudioMemoryError(f"the {NAMES[kind]}'s stream did not bring its header and result")
    return served, result

