"""``Orchestrator`` servicer: the gRPC edge of one ``CreateImage`` or ``CreateReel`` job (the job itself:
``pipeline.py``, ``reel.py``).

``CreateImage`` reads the options (before a slot: a caller who sends nothing holds none), then runs the job
on a task of its own — the job slot (its place in line reported while it waits), the upload
(``upload.receive``, room in the decoded-audio budget), ``Pipeline.run`` — while the call's thread relays
the job's progress from a side channel as ``StageEvent``s, then the PNG with its record. The caller going
away, or any failure, cancels the job as one event (``job.Job``); the call ends only once the task has.
``CreateReel`` is the same edge around ``Pipeline.reel`` (the reel's own options checked before the slot;
one slot whatever its sections), relaying the sections found and each section's image as it is painted.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import queue
import threading
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from audiomemory.client import record_json
from audiomemory.orchestrator.cache import AudioCache
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.downstream import Downstream
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.pipeline import Limits, Pipeline, Result
from audiomemory.orchestrator.pooling import STEM_ORDER
from audiomemory.orchestrator.record import embed_record
from audiomemory.orchestrator.reel import (
    SECTIONS_LIMIT,
    ReelResult,
    ReelSettings,
    SectionPainted,
    SectionsFound,
    parse_reel_options,
)
from audiomemory.orchestrator.stages import Event
from audiomemory.orchestrator.upload import receive
from audiomemory.runtime.backend import ModelInfo, package_version
from audiomemory.runtime.codec import iter_pieces
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.interceptor import current_caller
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

Stage = orchestrator_pb2.Stage
PACKAGE = "audiomemory-orchestrator"


@dataclass(frozen=True)
class _Finished:
    result: Any
    error: BaseException | None


def _event(event: Event) -> orchestrator_pb2.CreateImageResponse:
    return orchestrator_pb2.CreateImageResponse(event=orchestrator_pb2.StageEvent(
        stage=event.stage, current=event.current, total=event.total, message=event.message,
        cache_hit=event.cache_hit,
    ))


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, downstream: Downstream, gate: Gate, config: OrchestratorConfig) -> None:
        self.downstream = downstream
        self.fusion = downstream.fusion
        self.gate = gate
        self.config = config
        limits = Limits(config.max_upload_bytes, config.max_seconds, config.max_sample_rate,
                        config.max_lyrics_chars, config.profile)
        self.reel_settings = ReelSettings(config.max_sections, config.min_section_seconds, config.reel_max_batch)
        self.pipeline = Pipeline(downstream, AudioCache(config.cache_dir, config.cache_max_bytes), self.fusion,
                                 limits, self.identity)
        # Decoded audio in flight, in bytes: only running jobs ask (so it never refuses), in arrival order.
        self.memory = Gate(config.concurrency, config.concurrency, capacity=config.max_audio_bytes)
        self.memory.ready.set()

    def identity(self) -> common_pb2.ModelInfo:
        """The orchestrator's own ``ModelInfo``: its version, the fusion settings that shape an image and the
        limits a client (the web page) follows."""
        fusion = self.fusion
        return ModelInfo(
            backend="orchestrator", model_id=PACKAGE, revision=package_version(PACKAGE), device="cpu",
            dtype="float32", extra={
                "default_strength": f"{fusion.default_strength:g}",
                "default_projection_seed": str(fusion.default_projection_seed),
                "projection": fusion.projection.identity if fusion.projection else "seeded",
                "reference_stats": fusion.stats.identity if fusion.stats else "none",
                "stems": ",".join(STEM_ORDER),
                "max_seconds": f"{self.config.max_seconds:g}",
                "max_upload_bytes": str(self.config.max_upload_bytes),  # the web page's limits come from these
                "concurrency": str(self.config.concurrency), "max_queue": str(self.config.max_queue),
                "caller_share": "" if self.config.caller_share is None else str(self.config.caller_share),
                "max_sections": str(SECTIONS_LIMIT),  # a reel's limit and defaults (the web page's form)
                "default_max_sections": str(self.reel_settings.max_sections),
                "default_min_section_seconds": str(self.reel_settings.min_section_seconds),
            },
        ).to_proto("orchestrator", PACKAGE)

    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> orchestrator_pb2.OrchestratorInfo:
        infos = self.downstream.describe_all(Job(context, self.config.stall_seconds))
        return orchestrator_pb2.OrchestratorInfo(
            model=self.identity(), separator=infos.separator, audio_encoder=infos.audio_encoder,
            text_encoder=infos.text_encoder, generator=infos.generator, transcriber=infos.transcriber,
        )

    def CreateImage(
        self, request_iterator: Iterator[orchestrator_pb2.CreateImageRequest], context: grpc.ServicerContext
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        job = Job(context, self.config.stall_seconds)
        context.add_callback(job.cancel_all)  # the caller going away cancels every downstream call
        sent = _first_options(request_iterator)  # before a slot: its read is time-limited (runtime.pacing)

        def work(held: contextlib.ExitStack, report: Callable[[Event], None]) -> Result:
            prepared = self.pipeline.prepare(job, sent)
            return self.pipeline.run(job, sent, lambda: receive(self.config, self.memory, job, request_iterator,
                                                                prepared[0].filename, held, report), report, prepared)

        result = yield from self._serve(job, work, lambda event: (_event(event),))
        assert isinstance(result, Result)
        yield from _result(result)

    def CreateReel(
        self, request_iterator: Iterator[orchestrator_pb2.CreateReelRequest], context: grpc.ServicerContext
    ) -> Iterator[orchestrator_pb2.CreateReelResponse]:
        """One job (one slot of the job budget) whatever its sections: its batches take one generator slot at a
        time. The reel's own options are checked before the slot, the image options as ``CreateImage``'s."""
        job = Job(context, self.config.stall_seconds)
        context.add_callback(job.cancel_all)
        sent = _first_options(request_iterator, "CreateReelRequest")
        plan = parse_reel_options(sent, self.reel_settings)

        def work(held: contextlib.ExitStack, report: Callable[[Any], None]) -> ReelResult:
            prepared = self.pipeline.prepare(job, sent.image)
            return self.pipeline.reel(job, sent, plan, self.reel_settings, lambda: receive(
                self.config, self.memory, job, request_iterator, prepared[0].filename, held, report), report, prepared)

        yield from self._serve(job, work, _reel_response)

    def _serve(
        self, job: Job, work: Callable[[contextlib.ExitStack, Callable[[Any], None]], Any],
        respond: Callable[[Any], Iterable[Any]],
    ) -> Generator[Any, None, Any]:
        """Run ``work`` as the job's task (after its slot) and relay what it reports (``respond``: the responses
        each item becomes); returns its result, or raises its failure. The call ends only once the task has."""
        side: queue.SimpleQueue[Any] = queue.SimpleQueue()
        task = threading.Thread(target=contextvars.copy_context().run, name="am-orch-job",
                                args=(self._job, job, work, side), daemon=True)
        task.start()
        try:
            while not isinstance(item := side.get(), _Finished):
                yield from respond(item)
            error, result = item.error, item.result
            del item
            if error is not None:
                try:  # raised without a cycle error → traceback → this frame → error (it holds the job's frames)
                    raise error
                finally:
                    del error
            return result
        finally:
            job.cancel_all()  # a failed or finished job leaves nothing running
            task.join()

    def _job(self, job: Job, work: Callable[[contextlib.ExitStack, Callable[[Any], None]], Any],
             side: queue.SimpleQueue[Any]) -> None:
        try:
            with self.gate.admit(job.context, owner=current_caller()) as turn, contextlib.ExitStack() as held:
                for position in turn.waiting():  # nothing more of a queued job is read until it runs
                    side.put(Event(Stage.STAGE_QUEUED, position, 0,
                                   f"waiting for a free job slot (place {position} in line)"))
                with _frames_let_go():
                    result = work(held, side.put)
            side.put(_Finished(result, None))
        except BaseException as exc:  # the call's thread raises it
            side.put(_Finished(None, exc))


@contextlib.contextmanager
def _frames_let_go() -> Iterator[None]:
    """A failed or cancelled job lets go of its memory before its slot and room go to the next job.

    Its exceptions' tracebacks hold the frames of every function the failure passed through, in this
    thread and in the job's tasks (the task group re-raises a task's failure), and those frames hold the
    decoded song and its stems (10^8 bytes each) — some in reference cycles that would wait for Python's
    rare full collection. The frames' locals are cleared (the tracebacks still say where it failed) and
    the cycles collected while the job still holds its slot: with 8 callers cancelling, the next job
    would otherwise decode beside the last one's memory (+1.5 GB, RELIABILITY.md).
    """
    try:
        yield
    except BaseException as exc:
        seen: set[int] = set()
        error: BaseException | None = exc
        pending = [exc]
        while pending:
            error = pending.pop()
            if id(error) in seen:
                continue
            seen.add(id(error))
            traceback.clear_frames(error.__traceback__)
            pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
        del error, pending
        gc.collect()
        raise


def _first_options(requests: Iterator[Any], kind: str = "CreateImageRequest") -> Any:
    """The options a job's first message carries (``CreateImageOptions``, ``ReelOptions``)."""
    first = next(requests, None)
    if first is None or first.WhichOneof("item") != "options":
        raise InvalidInput(f"the first {kind} must carry options (then the file's bytes)")
    return first.options


def _result(result: Result) -> Iterator[orchestrator_pb2.CreateImageResponse]:
    png = embed_record(result.png, result.record)
    gen = result.record.generation
    yield _event(Event(Stage.STAGE_DONE, 1, 1, f"{gen.width}x{gen.height} PNG, {len(png)} bytes"))
    metadata_json = record_json(result.record)
    for piece, last in iter_pieces(png):
        yield orchestrator_pb2.CreateImageResponse(result=orchestrator_pb2.ImageResult(
            png=piece, last=last, metadata_json=metadata_json if last else "",
        ))


def _reel_response(item: Event | SectionsFound | SectionPainted) -> Iterator[orchestrator_pb2.CreateReelResponse]:
    """A reel's progress, its sections and each image (in pieces, the record on the last) as responses."""
    if isinstance(item, Event):
        yield orchestrator_pb2.CreateReelResponse(event=_event(item).event)
    elif isinstance(item, SectionsFound):
        yield orchestrator_pb2.CreateReelResponse(sections=orchestrator_pb2.ReelSections(
            spans=[orchestrator_pb2.Span(start_s=a, end_s=b) for a, b in item.spans], seconds=item.seconds))
    else:
        span = orchestrator_pb2.Span(start_s=item.span[0], end_s=item.span[1])
        for piece, last in iter_pieces(item.png):
            yield orchestrator_pb2.CreateReelResponse(image=orchestrator_pb2.SectionImage(
                index=item.index, span=span, png=piece, last=last, metadata_json=item.metadata_json if last else ""))


def add_servicer(server: grpc.Server, backend: Downstream, gate: Gate, config: OrchestratorConfig) -> None:
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorServicer(backend, gate, config), server)
