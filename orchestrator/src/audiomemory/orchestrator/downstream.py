"""The orchestrator's typed client of the model services; protobuf stays in here.

``Downstream`` is what the orchestrator loads before it serves (``runtime.backend.Loadable``): ``load()``
opens a channel per service (round-robin + retry service config), waits until each answers
``Describe`` and checks that they fit together, so the orchestrator reports SERVING only once the whole
pipeline can run. Its domain methods are the pipeline's downstream steps:

- ``describe_all(job)`` → ``Infos`` (services are redeployed independently: each job asks again);
- ``separate(job, audio, rate, fmt, stems)`` → ``Queued`` while the separator is busy, ``StemsStarted``,
  then ``StemPiece``s block by block as the song is separated;
- ``embed(job, signals, input_frames, pieces)`` → ``Queued``, then ``Frames`` as windows are embedded,
  then ``Embedded`` (all stems in one call, their pieces interleaved as they come from the separator);
- ``transcribe(job, input_frames, pieces)`` → ``Queued``, ``Heard`` as windows are transcribed, then the
  ``Transcript`` (the vocal stem's pieces, as the separator delivers them; ``transcription.py``);
- ``encode(job, texts)`` → ``Encoded`` (embeddings and which texts were truncated);
- ``generate(job, request)`` → ``Queued``, ``Step`` per denoising step, then ``Painted``; a replica
  that dies mid-stream is retried with the whole (deterministic) call.

Every call gets the caller's remaining time as its deadline, the request id, and is watched for
progress and cancelled with the job (``job.Job``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from audiomemory.orchestrator.compatibility import NAMES, Infos, check_compatibility, rpc_error
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.fusion import STEM_ORDER, Fusion
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.transcription import Heard, transcribe
from audiomemory.runtime import codec
from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.backend import Loadable
from audiomemory.runtime.errors import AudioMemoryError, DeadlineExceeded, Unavailable
from audiomemory.runtime.security import open_channel
from audiomemory.runtime.transcript import Transcript
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
    transcriber_pb2_grpc,
)

log = logging.getLogger(__name__)

MAX_PNG_BYTES = 64 * 1024 * 1024
STEMS = "stems"  # the separator and audio encoder calls of a job: one pipeline, alive while either speaks


@dataclass(frozen=True)
class StemFormat:
    """The format the separator delivers stems in: the audio encoder's own (rate, channels), float16 on
    the wire when it accepts it."""

    sample_rate: int
    channels: int
    dtype: str  # "float16" | "float32"


@dataclass(frozen=True)
class Queued:
    """A service's reply while the call waits for its model: its place in line (1 = next)."""

    position: int


@dataclass(frozen=True)
class StemsStarted:
    stems: tuple[str, ...]
    frames: int  # per stem, at the stem format's rate


@dataclass(frozen=True)
class StemPiece:
    stem: int  # index into StemsStarted.stems
    frames: int
    audio: tensor_pb2.AudioChunk  # passed on to the audio encoder as it came


@dataclass(frozen=True)
class Frames:
    signal: int
    embeddings: np.ndarray  # [n, D] float32, the signal's next frames
    done: int  # frames embedded so far, all signals
    total: int  # all signals (0 = unknown)


@dataclass(frozen=True)
class Embedded:
    frames: tuple[int, ...]  # T per signal


@dataclass(frozen=True)
class Encoded:
    embeddings: np.ndarray  # [B, L, D] float32
    truncated: tuple[bool, ...]


@dataclass(frozen=True)
class Painting:
    """What the generator is asked to paint (0 / None = its default)."""

    prompt_embeds: np.ndarray
    negative_prompt_embeds: np.ndarray
    seed: int
    steps: int
    guidance: float | None
    width: int
    height: int
    scheduler: str


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    attempt: int


@dataclass(frozen=True)
class Painted:
    png: bytes
    width: int
    height: int
    scheduler: str


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
                time.sleep(1.0)
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

    # -- the pipeline's calls -----------------------------------------------------------------------
    def _stream(self, job: Job, kind: str, call: Any, group: str | None = None) -> Iterator[Any]:
        return job.stream(call, lambda exc: rpc_error(kind, self.targets[kind], exc, job.context), NAMES[kind], group)

    @staticmethod
    def stem_format(infos: Infos) -> StemFormat:
        enc = infos.audio_encoder
        half = tensor_pb2.DTYPE_FLOAT16 in enc.accepted_dtypes and (
            infos.transcriber is None or tensor_pb2.DTYPE_FLOAT16 in infos.transcriber.accepted_dtypes)
        return StemFormat(enc.sample_rate, enc.channels, "float16" if half else "float32")

    def separate(
        self, job: Job, audio: np.ndarray, sample_rate: int, fmt: StemFormat, stems: tuple[str, ...]
    ) -> Iterator[Queued | StemsStarted | StemPiece]:
        """The song to the separator, asking for ``stems``; its stems back in pieces, block by block, as
        they are separated (``StemPiece.stem`` indexes the names ``StemsStarted`` gives)."""
        output = tensor_pb2.AudioFormat(sample_rate=fmt.sample_rate, channels=fmt.channels,
                                        dtype=codec.dtype_enum(fmt.dtype))

        def requests() -> Iterator[separator_pb2.SeparateRequest]:
            yield separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions(output=output, stems=stems))
            for chunk in iter_audio_chunks(audio, sample_rate):
                if job.cancelled.is_set():
                    return
                yield separator_pb2.SeparateRequest(audio=chunk)

        call = self.separator.Separate(requests(), timeout=job.timeout(), metadata=job.metadata)
        names: tuple[str, ...] = ()
        for reply in self._stream(job, "separator", call, group=STEMS):
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
        dim: int,
    ) -> Iterator[Queued | Frames | Embedded]:
        """``signals`` streams of audio (``pieces``: (signal, chunk), interleaved) to the audio encoder in one
        call; frame embeddings back as windows are embedded."""

        def requests() -> Iterator[audio_encoder_pb2.EmbedRequest]:
            options = audio_encoder_pb2.EmbedOptions(signals=signals, input_frames=input_frames)
            yield audio_encoder_pb2.EmbedRequest(options=options)
            for signal, chunk in pieces:
                yield audio_encoder_pb2.EmbedRequest(audio=chunk, signal=signal)

        call = self.audio_encoder.Embed(requests(), timeout=job.timeout(), metadata=job.metadata)
        next_frame = [0] * signals
        ended = False
        for reply in self._stream(job, "audio_encoder", call, group=STEMS):
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "frames":
                msg = reply.frames
                if not 0 <= msg.signal < signals or msg.first != next_frame[msg.signal]:
                    raise AudioMemoryError(
                        f"the audio encoder sent frames {msg.first}.. of signal {msg.signal}, expected "
                        f"signal 0..{signals - 1} from frame {next_frame[min(max(msg.signal, 0), signals - 1)]}"
                    )
                frames = codec.from_tensor(msg.embeddings, field=f"audio_encoder.frames[{msg.signal}]",
                                           shape=(None, dim), dtypes=("float32",), finite=True)
                next_frame[msg.signal] += frames.shape[0]
                yield Frames(msg.signal, frames, int(msg.done), int(msg.total))
            elif item == "end" and not ended:
                if list(reply.end.frames) != next_frame:
                    raise AudioMemoryError(
                        f"the audio encoder ended with {list(reply.end.frames)} frames, sent {next_frame}")
                ended = True
            else:
                raise AudioMemoryError(f"the audio encoder sent an unexpected {item or 'empty'} message")
        if not ended:
            raise AudioMemoryError("the audio encoder's stream ended without its EmbedEnd")
        yield Embedded(tuple(next_frame))

    def transcribe(
        self, job: Job, input_frames: int, pieces: Iterator[tensor_pb2.AudioChunk]
    ) -> Iterator[Queued | Heard | Transcript]:
        """The vocal stem (``pieces``, in the stem format) to the transcriber; its progress, then the transcript."""
        if self.transcriber is None:
            raise AudioMemoryError("no transcriber is configured (transcriber_target)")
        return transcribe(job, self.transcriber, lambda call: self._stream(job, "transcriber", call, group=STEMS),
                          input_frames, pieces)

    def encode(self, job: Job, texts: list[str], dims: tuple[int, int]) -> Encoded:
        """The texts' token embeddings ``[B, L, D]`` (``dims`` = (L, D) from its Describe) in one call."""
        length, hidden = dims
        call = self.text_encoder.Encode(text_encoder_pb2.EncodeRequest(texts=texts), timeout=job.timeout(),
                                        metadata=job.metadata)
        replies = self._stream(job, "text_encoder", call)
        first = next(replies, None)
        if first is None or first.WhichOneof("item") != "header":
            raise AudioMemoryError("the text encoder's stream did not start with a header")
        embeddings = codec.assemble_tensor(
            (r.embeddings for r in replies), "text_encoder.embeddings",
            max_bytes=len(texts) * max(length, 1) * hidden * 4 + 1,
            shape=(len(texts), length or None, hidden), dtypes=("float32", "float16"), finite=True,
        )
        return Encoded(np.asarray(embeddings, dtype=np.float32), tuple(first.header.truncated))

    def generate(self, job: Job, painting: Painting) -> Iterator[Queued | Step | Painted]:
        """Steps then the PNG; the whole call again (it is deterministic) if a replica dies mid-stream."""
        request = generator_pb2.GenerateRequest(
            prompt_embeds=codec.to_tensor(np.ascontiguousarray(painting.prompt_embeds, dtype=np.float32)),
            negative_prompt_embeds=codec.to_tensor(
                np.ascontiguousarray(painting.negative_prompt_embeds, dtype=np.float32)),
            seed=painting.seed, steps=painting.steps, guidance=painting.guidance, width=painting.width,
            height=painting.height, scheduler=painting.scheduler,
        )
        attempts = self.config.generate_attempts
        for attempt in range(1, attempts + 1):
            started = False
            try:
                for event in self._generate_once(job, request, attempt):
                    # Any reply, a place in line included, ends gRPC's own retries for this call.
                    started = started or isinstance(event, (Step, Queued))
                    yield event
                return
            except Unavailable as err:
                # A replica that dies mid-stream (or while the call waits in its line) shows as UNAVAILABLE (or
                # CANCELLED by a server shutting down, also UNAVAILABLE here). gRPC's retries cannot help once
                # replies have started: call again.
                retry = started and attempt < attempts and job.context.is_active() and not job.cancelled.is_set()
                if not retry:
                    raise
                log.warning("generator failed mid-stream (%s); retrying the whole Generate", err)
                time.sleep(0.2 * attempt)

    def _generate_once(
        self, job: Job, request: generator_pb2.GenerateRequest, attempt: int
    ) -> Iterator[Queued | Step | Painted]:
        call = self.generator.Generate(request, timeout=job.timeout(), metadata=job.metadata)
        png = bytearray()
        painted: Painted | None = None
        # Read to the end of the stream (its status), so the generator sees the call end OK, not cancelled.
        for reply in self._stream(job, "generator", call):
            item = reply.WhichOneof("item")
            if item == "queued":
                yield Queued(reply.queued.position)
            elif item == "progress":
                yield Step(reply.progress.step, reply.progress.total, attempt)
            elif item == "image" and painted is None:
                png += reply.image.png
                if len(png) > MAX_PNG_BYTES:
                    raise AudioMemoryError(f"the generator's PNG passed {MAX_PNG_BYTES} bytes")
                if reply.image.last:
                    painted = Painted(bytes(png), reply.image.width, reply.image.height, reply.image.scheduler)
            else:
                raise AudioMemoryError(f"the generator sent an unexpected {item or 'empty'} message")
        if painted is None:
            raise AudioMemoryError("the generator's stream ended without the last image piece")
        yield painted
