"""``Orchestrator`` servicer: one ``CreateImage`` job from song bytes to a PNG with metadata.

``_run`` is the pipeline of docs/DESIGN.md §1, one step a line, each stage streaming ``StageEvent``s:

1. options, checked before anything is uploaded or called (``options.py``);
2. every service's ``Describe`` and the compatibility check (``compatibility.py``), then the
   generator's and text encoder's limits — still before the upload;
3. the song file's bytes (capped), then decode (``decode.py``);
4. the text encoder, called once for [lyrics window, negative prompt], started now and left to run
   while the audio is worked on — or, when the lyrics are to be transcribed, once the words are heard;
5. the audio vector (``front.py``): the cache, or separate → embed → pool, streaming (and the vocal stem
   to the transcriber, concurrently, when asked);
6. fusion (DESIGN §2, ``fusion.py``) of the lyrics' embeddings; the negative prompt is left as encoded;
7. ``Generate``, its steps relayed (``downstream.py`` retries a replica lost mid-stream);
8. the PNG re-saved with its metadata (``metadata.py``), sent in pieces, the last with the JSON.

Downstream calls run under the caller's deadline and are watched for progress; all of a job's calls
are cancelled when the caller goes away or the job ends (``job.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator
from concurrent import futures
from typing import TypeVar

import grpc

from audiomemory.orchestrator.cache import AudioCache
from audiomemory.orchestrator.compatibility import Infos
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.decode import decode_audio
from audiomemory.orchestrator.downstream import Downstream, Encoded, Painted, Painting, Queued, Step
from audiomemory.orchestrator.front import Event, FrontHalf, queued
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.metadata import build_metadata, embed_metadata
from audiomemory.orchestrator.options import (
    JobOptions,
    check_with_services,
    parse_options,
    resolved_request,
    transcript_window,
)
from audiomemory.orchestrator.pooling import STEM_ORDER
from audiomemory.orchestrator.upload import receive
from audiomemory.runtime.backend import ModelInfo, package_version
from audiomemory.runtime.codec import iter_pieces
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.interceptor import current_caller
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

Stage = orchestrator_pb2.Stage
PACKAGE = "audiomemory-orchestrator"
MB = 1_000_000
T = TypeVar("T")


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
        # Each job runs its text encoding and three stream pumps (separator, audio encoder, transcriber) beside
        # its own thread.
        self._pool = futures.ThreadPoolExecutor(
            max_workers=4 * (config.concurrency + config.max_queue), thread_name_prefix="am-orch-job"
        )
        self.front = FrontHalf(downstream, AudioCache(config.cache_dir, config.cache_max_bytes), self._pool)
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
        try:
            # The options before a slot: a caller who sends nothing holds none (its read is time-limited).
            sent = _first_options(request_iterator)
            with self.gate.admit(context, owner=current_caller()) as turn, contextlib.ExitStack() as held:
                for position in turn.waiting():  # nothing more of a queued job is read until it runs
                    yield _event(Event(Stage.STAGE_QUEUED, position, 0,
                                       f"waiting for a free job slot (place {position} in line)"))
                yield from self._run(job, sent, request_iterator, held)
        finally:
            job.cancel_all()  # a failed or finished job leaves nothing running

    def _run(
        self, job: Job, sent: orchestrator_pb2.CreateImageOptions,
        requests: Iterator[orchestrator_pb2.CreateImageRequest], held: contextlib.ExitStack,
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        opts = parse_options(sent, self.fusion, self.config.max_lyrics_chars)          # 1
        infos = self.downstream.describe_all(job)                                      # 2
        self.downstream.check(infos)
        window = check_with_services(opts, infos)
        yield _event(Event(Stage.STAGE_UPLOADING, message="receiving the song file"))  # 3
        upload = yield from _relay(receive(self.config, self.memory, job, requests, opts.filename, held))
        data, sha256, room = upload.data, upload.sha256, upload.room
        yield _event(Event(Stage.STAGE_DECODING, message=f"decoding {len(data)} bytes"))
        song = decode_audio(data, filename=opts.filename, max_bytes=self.config.max_upload_bytes,
                            max_seconds=self.config.max_seconds, max_sample_rate=self.config.max_sample_rate,
                            max_frames=upload.frames, grow=upload.grow)
        room.resize(song.samples.nbytes)
        upload_bytes = len(data)
        del data, upload
        job.check()
        encoding = None if opts.source == "transcribe" else self._encode(job, infos, window, opts)  # 4
        audio = yield from _relay(self.front.audio_vector(job, infos, song, sha256, encoding is None))  # 5
        song = song.without_samples()  # the waveform's room goes to the next job while this one paints
        room.resize(0)
        job.check()
        if audio.transcript is not None:  # the words heard are the lyrics
            window = transcript_window(opts, audio.transcript, infos)
        encoding = encoding or self._encode(job, infos, window, opts)
        yield _event(Event(Stage.STAGE_ENCODING_TEXT, message="encoding lyrics and negative prompt"))
        encoded = encoding.result()
        yield _event(Event(Stage.STAGE_FUSING, message=f"fusing audio into text, strength {opts.strength:g}"))
        fused = self.fusion.apply(encoded.embeddings[0:1], audio.pooled, opts.strength,  # 6
                                  projection_seed=opts.projection_seed, keep_bos=opts.keep_bos)
        painting = Painting(fused.embeddings, encoded.embeddings[1:2], opts.seed, opts.steps, opts.guidance,
                            opts.width, opts.height, opts.scheduler)
        asked = opts.steps or infos.generator.default_steps
        painted, denoising_steps = yield from self._paint(job, painting, asked)         # 7
        metadata = build_metadata(                                                     # 8
            opts=opts, infos=infos, orchestrator=self.identity(), profile=self.config.profile, song=song,
            sha256=sha256, upload_bytes=upload_bytes, window=window, truncated=encoded.truncated,
            fusion=self.fusion, fused=fused, painted=painted,
            denoising_steps=denoising_steps, audio=audio,
            stem_format=self.downstream.stem_format(infos), request=resolved_request(sent, opts),
        )
        yield from _result(embed_metadata(painted.png, metadata), metadata, painted)

    def _encode(self, job: Job, infos: Infos, window: str, opts: JobOptions) -> futures.Future[Encoded]:
        """The text encoder's call for [lyrics window, negative prompt], left to run in the pool."""
        text = infos.text_encoder
        return self._pool.submit(self.downstream.encode, job, [window, opts.negative_prompt],
                                 (text.max_length, text.hidden_size))

    def _paint(
        self, job: Job, painting: Painting, asked: int
    ) -> Generator[orchestrator_pb2.CreateImageResponse, None, tuple[Painted, int]]:
        """Relay the generator's steps as steps of the ``asked`` (a scheduler may run an extra warm-up
        call: PNDM runs 31 for 30); return the image and the denoising calls it ran."""
        yield _event(Event(Stage.STAGE_GENERATING, 0, asked, "generating"))
        total = 0
        for event in self.downstream.generate(job, painting):
            if isinstance(event, Queued):
                yield _event(queued("generator", event.position))
            elif isinstance(event, Step):
                total = event.total
                step = min(asked, round(event.step * asked / max(event.total, 1)))
                attempts = self.config.generate_attempts
                note = "" if event.attempt == 1 else f" (replica lost; retrying (attempt {event.attempt}/{attempts}))"
                yield _event(Event(Stage.STAGE_GENERATING, step, asked, f"step {step}/{asked}{note}"))
            elif isinstance(event, Painted):
                return event, total
        raise AssertionError("the generator's stream ended without an image")  # downstream raises first


def _first_options(requests: Iterator[orchestrator_pb2.CreateImageRequest]) -> orchestrator_pb2.CreateImageOptions:
    first = next(requests, None)
    if first is None or first.WhichOneof("item") != "options":
        raise InvalidInput("the first CreateImageRequest must carry options (then the file's bytes)")
    return first.options


def _relay(stage: Generator[Event, None, T]) -> Generator[orchestrator_pb2.CreateImageResponse, None, T]:
    """A stage's progress as ``StageEvent``s; returns what the stage returns."""
    while True:
        try:
            event = next(stage)
        except StopIteration as done:
            return done.value
        yield _event(event)


def _result(
    png: bytes, metadata: dict[str, object], painted: Painted
) -> Iterator[orchestrator_pb2.CreateImageResponse]:
    yield _event(Event(Stage.STAGE_DONE, 1, 1, f"{painted.width}x{painted.height} PNG, {len(png)} bytes"))
    metadata_json = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
    for piece, last in iter_pieces(png):
        yield orchestrator_pb2.CreateImageResponse(result=orchestrator_pb2.ImageResult(
            png=piece, last=last, metadata_json=metadata_json if last else "",
        ))


def add_servicer(server: grpc.Server, backend: Downstream, gate: Gate, config: OrchestratorConfig) -> None:
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorServicer(backend, gate, config), server)
