"""The gRPC adapter of the job's stages (``stages.Stages``): the orchestrator's typed client of the model
services; protobuf stays in here.

``Downstream`` is what the orchestrator loads before it serves (``runtime.backend.Loadable``): ``load()``
opens a channel per service (round-robin + retry service config), waits until each answers
``Describe`` and checks that they fit together, so the orchestrator reports SERVING only once the whole
pipeline can run. Its methods are the stages (each stream: ``Served`` first, then):

- ``describe(job)`` → ``Infos`` (services are redeployed independently: each job asks again);
- ``separate(...)`` → ``Queued`` while the separator is busy, ``StemsStarted``, then ``StemPiece``s block by
  block as the song is separated;
- ``embed(...)`` → ``Queued``, then ``Frames`` as windows are embedded, then ``Embedded`` (all stems in one
  call, their pieces interleaved as they come from the separator);
- ``transcribe(...)`` → ``Queued``, ``Heard`` as windows are transcribed, then the ``Transcript`` (the vocal
  stem's pieces, as the separator delivers them);
- ``encode(...)`` → ``Encoded`` (embeddings and which texts were truncated);
- ``generate(...)`` → ``Queued``, ``Step`` per denoising step, then ``Painted`` (one per item of a batch, in
  order; ``max_batch(infos)`` items at most); a replica that dies mid-stream is retried with the whole
  (deterministic) call, pinned to the identity that started it.

Every stream opens with the serving replica's ``Served`` header (passed on as the first event); a call
carries the stage's ``Pin`` (a replica of another identity refuses it before answering, and the channel's
retry policy moves it on). Every call gets the caller's remaining time as its deadline, the request id, and
is watched for progress and cancelled with the job (``job.Job``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from audiomemory.orchestrator.compatibility import NAMES, Infos, batch_limit, check_compatibility, rpc_error
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.fusion import STEM_ORDER, Fusion
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.replies import FrameCheck, ImageCheck
from audiomemory.orchestrator.stages import (
    Embedded,
    Encoded,
    Frames,
    Heard,
    Painted,
    Painting,
    Pin,
    Queued,
    Served,
    StemFormat,
    StemPiece,
    StemsStarted,
    Step,
)
from audiomemory.runtime import codec
from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.backend import Loadable
from audiomemory.runtime.errors import AudioMemoryError, Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable
from audiomemory.runtime.identity import pin_for
from audiomemory.runtime.security import open_channel
from audiomemory.runtime.transcript import Segment, Transcript
from audiomemory.v1 import (
    audio_encoder_pb2,
    audio_encoder_pb2_grpc,
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    separator_pb2,
    separator_pb2_grpc,
    tensor_pb2,
    text_encoder_pb2,
    text_encoder_pb2_grpc,
    transcriber_pb2,
    transcriber_pb2_grpc,
)

log = logging.getLogger(__name__)

STEMS = "stems"  # the separator and audio encoder calls of a job: one pipeline, alive while either speaks


class Downstream(Loadable):
    """Channels and stubs to the model services (the transcriber when configured), and the pipeline's calls."""

    exclusive_load = False  # waits on the model services (maybe in this process) and builds no torch modules

    def __init__(self, config: OrchestratorConfig) -> None:
        self.config = config
        self.targets = config.targets()
        options = [
            ("grpc.service_config", config.service_config),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # gRPC keeps only 256 KiB of a call for retries by default; a full-size SD 1.5 GenerateRequest
            # (two [1, 77, 768] float32 tensors, 473 KB) would then never be retried on another replica.
            ("grpc.per_rpc_retry_buffer_size", config.max_message_bytes),
        ]
        self.channels = {
            kind: open_channel(self.targets[kind], ca=config.downstream_tls_ca, cert=config.downstream_tls_cert,
                               key=config.downstream_tls_key, options=options)
            for kind in self.targets
        }
        self.separator = separator_pb2_grpc.SeparatorStub(self.channels["separator"])
        self.audio_encoder = audio_encoder_pb2_grpc.AudioEncoderStub(self.channels["audio_encoder"])
        self.text_encoder = text_encoder_pb2_grpc.TextEncoderStub(self.channels["text_encoder"])
        self.generator = generator_pb2_grpc.GeneratorStub(self.channels["generator"])
        self.transcriber = (transcriber_pb2_grpc.TranscriberStub(self.channels["transcriber"])
                            if "transcriber" in self.channels else None)
        self.fusion = Fusion.from_files(
            config.projection_file, config.reference_stats, default_strength=config.strength,
            default_projection_seed=config.projection_seed,
        )
        self._closed = threading.Event()

    # -- readiness --------------------------------------------------------------------------------
    def load(self) -> None:
        """Wait until every service answers, then check they fit together (the readiness gate)."""
        deadline = time.monotonic() + self.config.connect_timeout_seconds
        while True:
            try:
                infos = self.describe_all(wait_for_ready=True)
                break
            except (Unavailable, DeadlineExceeded) as exc:
                if self._closed.is_set() or time.monotonic() > deadline:
                    raise Unavailable(
                        f"gave up after {self.config.connect_timeout_seconds:.0f} s waiting for the model "
                        f"services: {exc}"
                    ) from None
                log.info("orchestrator: waiting for the model services: %s", exc)
                self._closed.wait(1.0)
        self.check(infos)
        if self.fusion.projection is None:  # build (and cache) the default seeded projection now
            self.fusion.projection_for(infos.text_encoder.hidden_size, self.fusion.default_projection_seed,
                                       2 * len(STEM_ORDER) * infos.audio_encoder.embedding_dim)
        log.info("orchestrator: pipeline ready (%s)",
                 ", ".join(f"{k}={getattr(infos, k).model.model_id}" for k in self.targets))

    def check(self, infos: Infos) -> None:
        """``check_compatibility`` with this orchestrator's projection, statistics and length limit."""
        check_compatibility(infos, self.fusion.projection, self.fusion.stats, self.config.max_seconds)

    def close(self) -> None:
        self._closed.set()
        for channel in self.channels.values():
            channel.close()

    def describe_all(self, job: Job | None = None, *, wait_for_ready: bool = False) -> Infos:
        """Every service's ``Describe``, concurrently; the first failure names its service."""
        calls = {
            kind: getattr(self, kind).Describe.future(
                common_pb2.DescribeRequest(), timeout=self.config.describe_timeout_seconds,
                wait_for_ready=wait_for_ready, metadata=job.metadata if job else None,
            )
            for kind in self.targets
        }
        answers: dict[str, Any] = {}
        for kind in self.targets:
            try:
                answers[kind] = calls[kind].result()
            except grpc.RpcError as exc:
                raise rpc_error(kind, self.targets[kind], exc) from None
        return Infos(**answers)

    def describe(self, job: Job) -> Infos:
        """Every service's ``Describe`` for a job, checked to fit together (they are redeployed independently)."""
        infos = self.describe_all(job)
        self.check(infos)
        return infos

    # -- the pipeline's calls -----------------------------------------------------------------------
    def _replies(self, job: Job, kind: str, call: Any, group: str | None = None) -> Iterator[Any]:
        """The call's replies after its ``Served`` header, which comes first (as an event of its own)."""
        def failed(exc: grpc.RpcError) -> AudioMemoryError:
            if job.cancelled.is_set() and isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.CANCELLED:
                return Cancelled(f"the job was cancelled while the {NAMES[kind]} was working")
            return rpc_error(kind, self.targets[kind], exc, job.context)

        replies = job.stream(call, failed, NAMES[kind], group)
        first = next(replies, None)
        if first is None or first.WhichOneof("item") != "served":
            what = first.WhichOneof("item") if first is not None else "nothing"
            raise AudioMemoryError(f"the {NAMES[kind]} sent {what} before its call header (Served): a service "
                                   "older than this orchestrator?")
        yield first.served
        yield from replies

    def separate(
        self, job: Job, audio: np.ndarray, sample_rate: int, fmt: StemFormat, stems: tuple[str, ...], pin: Pin,
    ) -> Iterator[Served | Queued | StemsStarted | StemPiece]:
        """The song to the separator, asking for ``stems``; its stems back in pieces, block by block, as
        they are separated (``StemPiece.stem`` indexes the names ``StemsStarted`` gives)."""
        output = tensor_pb2.AudioFormat(sample_rate=fmt.sample_rate, channels=fmt.channels,
                                        dtype=codec.dtype_enum(fmt.dtype))

        def requests() -> Iterator[separator_pb2.SeparateRequest]:
            yield separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions(output=output, stems=stems,
                                                                                      pin=pin))
            for chunk in iter_audio_chunks(audio, sample_rate):
                if job.cancelled.is_set():
                    return
                yield separator_pb2.SeparateRequest(audio=chunk)

        call = job.open(lambda: self.separator.Separate(requests(), timeout=job.timeout(), metadata=job.metadata))
        replies = self._replies(job, "separator", call, group=STEMS)
        yield next(replies)
        names: tuple[str, ...] = ()
        for reply in replies:
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "header":
                names = tuple(reply.header.stems)
                missing = [name for name in stems if name not in names]
                if missing:  # (a separator may send more stems, or its own order, if it ignores the option)
                    raise AudioMemoryError(f"the separator sent the stems {list(names)}, without {missing}")
                yield StemsStarted(names, int(reply.header.frames))
            elif item == "chunk" and names and 0 <= reply.chunk.stem < len(names):
                samples = reply.chunk.audio.samples
                yield StemPiece(reply.chunk.stem, int(samples.shape[1]) if len(samples.shape) == 2 else 0,
                                reply.chunk.audio)
            else:
                raise AudioMemoryError(f"the separator sent an unexpected {item or 'empty'} message")

    def embed(
        self, job: Job, signals: int, input_frames: int, pieces: Iterator[tuple[int, tensor_pb2.AudioChunk]],
        dim: int, pin: Pin,
    ) -> Iterator[Served | Queued | Frames | Embedded]:
        """``signals`` streams of audio (``pieces``: (signal, chunk), interleaved) to the audio encoder in one
        call; frame embeddings back as windows are embedded."""

        def requests() -> Iterator[audio_encoder_pb2.EmbedRequest]:
            options = audio_encoder_pb2.EmbedOptions(signals=signals, input_frames=input_frames, pin=pin)
            yield audio_encoder_pb2.EmbedRequest(options=options)
            for signal, chunk in pieces:
                yield audio_encoder_pb2.EmbedRequest(audio=chunk, signal=signal)

        call = job.open(lambda: self.audio_encoder.Embed(requests(), timeout=job.timeout(), metadata=job.metadata))
        replies = self._replies(job, "audio_encoder", call, group=STEMS)
        yield next(replies)
        frames = FrameCheck(signals, dim)
        for reply in replies:
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "frames":
                yield frames.add(reply.frames)
            elif item == "end" and not frames.ended:
                frames.end(list(reply.end.frames))
            else:
                raise AudioMemoryError(f"the audio encoder sent an unexpected {item or 'empty'} message")
        if not frames.ended:
            raise AudioMemoryError("the audio encoder's stream ended without its EmbedEnd")
        yield Embedded(tuple(frames.next_frame))

    def transcribe(
        self, job: Job, input_frames: int, pieces: Iterator[tensor_pb2.AudioChunk], pin: Pin,
    ) -> Iterator[Served | Queued | Heard | Transcript]:
        """The vocal stem (``pieces``, in the stem format) to the transcriber; its progress, then the transcript."""
        transcriber = self.transcriber
        if transcriber is None:
            raise AudioMemoryError("no transcriber is configured (transcriber_target)")

        def requests() -> Iterator[transcriber_pb2.TranscribeRequest]:
            options = transcriber_pb2.TranscribeOptions(input_frames=input_frames, pin=pin)
            yield transcriber_pb2.TranscribeRequest(options=options)
            for chunk in pieces:
                yield transcriber_pb2.TranscribeRequest(audio=chunk)

        call = job.open(lambda: transcriber.Transcribe(requests(), timeout=job.timeout(), metadata=job.metadata))
        replies = self._replies(job, "transcriber", call, group=STEMS)
        yield next(replies)
        transcript: Transcript | None = None
        for reply in replies:
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "progress" and transcript is None:
                yield Heard(reply.progress.seconds_done, reply.progress.seconds_total)
            elif item == "transcript" and transcript is None:
                msg = reply.transcript
                transcript = Transcript(msg.text, msg.language,
                                        tuple(Segment(s.start, s.end, s.text) for s in msg.segments), msg.seconds)
            else:
                raise AudioMemoryError(f"the transcriber sent an unexpected {item or 'empty'} message")
        if transcript is None:
            raise AudioMemoryError("the transcriber's stream ended without its transcript")
        yield transcript

    def encode(self, job: Job, texts: list[str], dims: tuple[int, int], pin: Pin) -> Iterator[Served | Encoded]:
        """The texts' token embeddings ``[B, L, D]`` (``dims`` = (L, D) from its Describe) in one call."""
        length, hidden = dims
        request = text_encoder_pb2.EncodeRequest(texts=texts, pin=pin)
        call = job.open(lambda: self.text_encoder.Encode(request, timeout=job.timeout(), metadata=job.metadata))
        replies = self._replies(job, "text_encoder", call)
        yield next(replies)
        first = next(replies, None)
        if first is None or first.WhichOneof("item") != "header":
            raise AudioMemoryError("the text encoder's stream did not start with a header")
        embeddings = codec.assemble_tensor(
            (r.embeddings for r in replies), "text_encoder.embeddings",
            max_bytes=len(texts) * max(length, 1) * hidden * 4 + 1,
            shape=(len(texts), length or None, hidden), dtypes=("float32", "float16"), finite=True,
        )
        yield Encoded(np.asarray(embeddings, dtype=np.float32), tuple(first.header.truncated))

    def max_batch(self, infos: Infos) -> int:
        """The generator's ``max_batch``, lowered to what this orchestrator's ``max_message_bytes`` sends."""
        return batch_limit(infos.generator, self.config.max_message_bytes)

    def generate(self, job: Job, painting: Painting, pin: Pin) -> Iterator[Served | Queued | Step | Painted]:
        """The header, steps then the images (a batch's in order); the whole call again (it is deterministic, and
        pinned to the replica that started it) if a replica dies mid-stream, passing on only the images not
        passed on before."""
        request = generator_pb2.GenerateRequest(
            prompt_embeds=codec.to_tensor(np.ascontiguousarray(painting.prompt_embeds, dtype=np.float32)),
            negative_prompt_embeds=codec.to_tensor(
                np.ascontiguousarray(painting.negative_prompt_embeds, dtype=np.float32)),
            seed=painting.seed, steps=painting.steps, guidance=painting.guidance, width=painting.width,
            height=painting.height, scheduler=painting.scheduler, pin=pin, seeds=painting.seeds,
        )
        if request.ByteSize() > self.config.max_message_bytes:
            raise ResourceExhausted(
                f"a Generate request of {len(painting.seeds) or 1} prompt(s) is {request.ByteSize()} bytes, over the "
                f"orchestrator's max_message_bytes ({self.config.max_message_bytes}); paint fewer at once"
            )
        attempts, passed_on = self.config.generate_attempts, 0
        for attempt in range(1, attempts + 1):
            started = False
            try:
                for event in self._generate_once(job, request, attempt, len(painting.seeds) or 1):
                    if isinstance(event, Served) and not request.pin.identity:
                        request.pin.CopyFrom(pin_for(event))  # a retry paints with the same identity
                    # Any reply — the header included, sent before the first step, which can take seconds — ends
                    # gRPC's own retries for this call (it is committed): from then on a lost replica is ours to retry.
                    started = True
                    if isinstance(event, Painted):
                        if event.index < passed_on:
                            continue
                        passed_on += 1
                    if attempt == 1 or not isinstance(event, Served):
                        yield event
                return
            except Unavailable as err:
                # A replica that dies mid-stream (or while the call waits in its line) shows as UNAVAILABLE (or
                # CANCELLED by a server shutting down, also UNAVAILABLE here). gRPC's retries cannot help once
                # replies have started: call again.
                retry = started and attempt < attempts and job.context is not None and job.context.is_active() \
                    and not job.cancelled.is_set()
                if not retry:
                    raise
                log.warning("generator failed mid-stream (%s); retrying the whole Generate", err)
                if job.cancelled.wait(0.2 * attempt):
                    raise

    def _generate_once(
        self, job: Job, request: generator_pb2.GenerateRequest, attempt: int, count: int
    ) -> Iterator[Served | Queued | Step | Painted]:
        call = job.open(lambda: self.generator.Generate(request, timeout=job.timeout(), metadata=job.metadata))
        images = ImageCheck(count)
        replies = self._replies(job, "generator", call)
        yield next(replies)
        # Read to the end of the stream (its status), so the generator sees the call end OK, not cancelled.
        for reply in replies:
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "progress":
                yield Step(reply.progress.step, reply.progress.total, attempt, self.config.generate_attempts)
            elif item == "image":
                painted = images.add(reply.image)
                if painted is not None:
                    yield painted
            else:
                raise AudioMemoryError(f"the generator sent an unexpected {item or 'empty'} message")
        images.end()
