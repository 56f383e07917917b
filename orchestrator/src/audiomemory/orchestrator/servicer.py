"""``Orchestrator`` servicer: one ``CreateImage`` job from song bytes to a PNG with metadata.

A job, in order (each stage streams a ``StageEvent``):

1. options (validated before anything is uploaded or called), then the file bytes (capped);
2. every service's ``Describe`` and the compatibility check (a down service → UNAVAILABLE naming it);
3. decode (PyAV) → cache lookup by the bytes' hash and the separator/encoder identities;
4. on a miss: ``Separate`` asked for stems in the audio encoder's format (rate, channels, float16 when
   accepted); each stem's ``AudioChunk``s are piped, as they arrive, into that stem's own ``Embed``
   call, so the four stems are embedded concurrently and the separator's output never sits whole in
   memory here; pool (mean, population std; vocals, drums, bass, other) and store in the cache;
5. the text encoder, called once for [lyrics window, negative prompt] (started at the beginning of the
   job, as it depends on nothing else);
6. fusion (DESIGN §2) of the lyrics embeddings only; the negative prompt is left as encoded;
7. ``Generate``, whose step progress is relayed; if a replica dies mid-stream (UNAVAILABLE after
   progress started) the whole call is made again (it is deterministic given the seed);
8. the PNG re-saved with metadata text chunks, sent in pieces under 1 MiB, the last with the JSON.

Every downstream call gets the time the caller has left (capped per service) and the request id;
all of a job's calls are cancelled when the caller goes away (``context.add_callback``) or the job
fails, so a cancelled job leaves no work running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import av
import grpc
import numpy as np
from google.protobuf import json_format

from audiomemory.orchestrator.cache import AudioCache, CachedAudio, cache_key
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.decode import DecodedAudio, decode_audio
from audiomemory.orchestrator.downstream import Downstream, Infos, check_compatibility, rpc_error
from audiomemory.orchestrator.fusion import STEM_ORDER, Projection, audio_direction, fuse, pool_stems
from audiomemory.orchestrator.lyrics import WINDOWS, lyrics_window
from audiomemory.orchestrator.metadata import SCHEMA_VERSION, embed_metadata
from audiomemory.runtime import codec
from audiomemory.runtime.errors import (
    AudioMemoryError,
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ResourceExhausted,
)
from audiomemory.runtime.interceptor import REQUEST_ID_KEY, current_request_id
from audiomemory.runtime.service import Gate
from audiomemory.v1 import (
    audio_encoder_pb2,
    common_pb2,
    generator_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    separator_pb2,
    tensor_pb2,
    text_encoder_pb2,
)

log = logging.getLogger(__name__)

Stage = orchestrator_pb2.Stage
RESULT_PIECE_BYTES = 512 * 1024  # ImageResult pieces stay well under 1 MiB (and gRPC's 4 MiB)
MAX_LYRICS_CHARS = 100_000
MAX_NEGATIVE_CHARS = 10_000
MAX_FILENAME_CHARS = 512
_POLL_S = 0.1


def _event(
    stage: orchestrator_pb2.Stage.ValueType, current: int = 0, total: int = 0, message: str = "",
    cache_hit: bool = False,
) -> orchestrator_pb2.CreateImageResponse:
    return orchestrator_pb2.CreateImageResponse(
        event=orchestrator_pb2.StageEvent(
            stage=stage, current=current, total=total, message=message, cache_hit=cache_hit
        )
    )


@dataclass(frozen=True)
class JobOptions:
    """Validated ``CreateImageOptions`` with the defaults resolved."""

    lyrics: str
    window: str
    negative_prompt: str
    strength: float
    seed: int
    steps: int
    guidance: float
    guidance_set: bool
    width: int
    height: int
    scheduler: str
    projection_seed: int
    keep_bos: bool
    filename: str


def validate_options(msg: orchestrator_pb2.CreateImageOptions, config: OrchestratorConfig) -> JobOptions:
    """Absurd options → INVALID_ARGUMENT naming the field, the limit and what came."""
    if len(msg.lyrics) > MAX_LYRICS_CHARS:
        raise InvalidInput(f"options.lyrics: at most {MAX_LYRICS_CHARS} characters, got {len(msg.lyrics)}")
    if msg.lyrics_window not in ("", *WINDOWS):
        raise InvalidInput(f"options.lyrics_window: one of {list(WINDOWS)}, got {msg.lyrics_window!r}")
    if len(msg.negative_prompt) > MAX_NEGATIVE_CHARS:
        raise InvalidInput(
            f"options.negative_prompt: at most {MAX_NEGATIVE_CHARS} characters, got {len(msg.negative_prompt)}"
        )
    strength = float(msg.strength) if msg.strength_set else config.strength
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise InvalidInput(f"options.strength: must be in [0, 1], got {msg.strength!r}")
    if not 0 <= msg.steps <= 150:
        raise InvalidInput(f"options.steps: 1..150 (0 = the generator's default), got {msg.steps}")
    if msg.guidance_set and not (math.isfinite(msg.guidance) and 0.0 <= msg.guidance <= 30.0):
        raise InvalidInput(f"options.guidance: must be in [0, 30], got {msg.guidance!r}")
    for name in ("width", "height"):
        value = getattr(msg, name)
        if value != 0 and not (64 <= value <= 1024 and value % 8 == 0):
            raise InvalidInput(f"options.{name}: a multiple of 8 in 64..1024 (0 = default), got {value}")
    if len(msg.filename) > MAX_FILENAME_CHARS:
        raise InvalidInput(f"options.filename: at most {MAX_FILENAME_CHARS} characters, got {len(msg.filename)}")
    return JobOptions(
        lyrics=msg.lyrics,
        window=msg.lyrics_window or "salient",
        negative_prompt=msg.negative_prompt,
        strength=strength,
        seed=int(msg.seed),
        steps=int(msg.steps),
        guidance=float(msg.guidance),
        guidance_set=bool(msg.guidance_set),
        width=int(msg.width),
        height=int(msg.height),
        scheduler=msg.scheduler,
        projection_seed=int(msg.projection_seed) or config.projection_seed,
        keep_bos=bool(msg.keep_bos),
        filename=msg.filename,
    )


class Job:
    """The downstream calls of one job, so that all of them can be cancelled at once."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context
        self.cancelled = threading.Event()
        self._calls: list[grpc.Future] = []
        self._lock = threading.Lock()
        self.metadata = ((REQUEST_ID_KEY, current_request_id()),)

    def track(self, call: Any) -> Any:
        with self._lock:
            self._calls.append(call)
            if self.cancelled.is_set():
                call.cancel()
        return call

    def cancel_all(self) -> None:
        self.cancelled.set()
        with self._lock:
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    def timeout(self, cap: float) -> float:
        """Seconds a downstream call may take: the caller's remaining time, capped per service."""
        remaining = self.context.time_remaining()
        if remaining is None:
            return cap
        if remaining <= 0:
            raise DeadlineExceeded("the job ran out of time (the caller's deadline passed)")
        return min(cap, remaining)

    def check(self) -> None:
        if self.cancelled.is_set() or not self.context.is_active():
            raise Cancelled("the caller cancelled the job")


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, downstream: Downstream, gate: Gate, config: OrchestratorConfig) -> None:
        self.downstream = downstream
        self.gate = gate
        self.config = config
        self.cache = AudioCache(config.cache_dir, config.cache_max_bytes)
        # Each job runs up to 4 Embed readers and 1 Encode reader next to its own thread.
        self._pool = futures.ThreadPoolExecutor(
            max_workers=5 * (config.concurrency + config.max_queue), thread_name_prefix="am-orch-job"
        )

    # -- Describe ---------------------------------------------------------------------------------
    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> orchestrator_pb2.OrchestratorInfo:
        infos = self.downstream.describe_all(metadata=((REQUEST_ID_KEY, current_request_id()),))
        return orchestrator_pb2.OrchestratorInfo(
            model=self.downstream.describe().to_proto("orchestrator", "audiomemory-orchestrator"),
            separator=infos.separator,
            audio_encoder=infos.audio_encoder,
            text_encoder=infos.text_encoder,
            generator=infos.generator,
        )

    # -- CreateImage ------------------------------------------------------------------------------
    def CreateImage(
        self, request_iterator: Iterator[orchestrator_pb2.CreateImageRequest], context: grpc.ServicerContext
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        job = Job(context)
        context.add_callback(job.cancel_all)  # the caller going away cancels every downstream call
        try:
            with self.gate.slot(context):
                yield from self._run(job, request_iterator)
        finally:
            job.cancel_all()  # a failed or finished job leaves nothing running

    def _run(
        self, job: Job, requests: Iterator[orchestrator_pb2.CreateImageRequest]
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "options":
            raise InvalidInput("the first CreateImageRequest must carry options (then the file's bytes)")
        opts = validate_options(first.options, self.config)

        infos = self.downstream.describe_all(metadata=job.metadata)
        check_compatibility(infos, self.downstream.projection, self.downstream.stats)
        if opts.scheduler and opts.scheduler not in infos.generator.schedulers:
            raise InvalidInput(
                f"options.scheduler: one of {list(infos.generator.schedulers)}, got {opts.scheduler!r}"
            )
        window = lyrics_window(opts.lyrics, opts.window)
        if infos.text_encoder.max_chars and len(window) > infos.text_encoder.max_chars:
            window = window[: infos.text_encoder.max_chars]  # the tokenizer keeps ~77 tokens anyway
        if infos.text_encoder.max_chars and len(opts.negative_prompt) > infos.text_encoder.max_chars:
            raise InvalidInput(
                f"options.negative_prompt: the text encoder takes at most {infos.text_encoder.max_chars} "
                f"characters, got {len(opts.negative_prompt)}"
            )
        yield _event(Stage.STAGE_UPLOADING, message="receiving the song file")
        data, sha256 = self._receive(job, requests)
        upload_bytes = len(data)

        yield _event(Stage.STAGE_DECODING, message=f"decoding {len(data)} bytes")
        decoded = decode_audio(
            data, filename=opts.filename, max_bytes=self.config.max_upload_bytes,
            max_seconds=self.config.max_seconds,
        )
        del data
        job.check()
        # Text does not depend on the audio: encode it while the audio is separated and embedded
        # (only now, so that a bad upload costs no downstream work).
        text_future = self._pool.submit(self._encode_text, job, infos, [window, opts.negative_prompt])

        stem_format = self._stem_format(infos)
        key = cache_key(
            sha256,
            separator=_identity(infos.separator.model),
            audio_encoder=_identity(infos.audio_encoder.model),
            stem_format=json_format.MessageToDict(stem_format),
            decoder=f"pyav-{av.__version__}",
        )
        cached = self.cache.get(key)
        if cached is not None:
            pooled = np.asarray(cached.pooled, np.float32)
            yield _event(Stage.STAGE_EMBEDDING, 4, 4, message="cache hit", cache_hit=True)
        else:
            yield _event(Stage.STAGE_SEPARATING, message=f"separating {decoded.seconds:.1f} s into stems")
            frames: dict[str, np.ndarray] = {}
            stamps: dict[str, np.ndarray] = {}
            yield from self._separate_and_embed(job, infos, decoded, stem_format, frames, stamps)
            pooled = pool_stems(frames)
            self.cache.put(key, CachedAudio(pooled, frames, stamps))
        job.check()

        yield _event(Stage.STAGE_ENCODING_TEXT, message="encoding lyrics and negative prompt")
        embeddings, truncated = text_future.result()
        job.check()

        yield _event(Stage.STAGE_FUSING, message=f"fusing audio into text, strength {opts.strength:g}")
        lyrics_e, negative_e = embeddings[0:1], embeddings[1:2]
        projection = self.downstream.projection or Projection.from_seed(
            lyrics_e.shape[-1], opts.projection_seed, pooled.size
        )
        fused = fuse(
            lyrics_e, pooled, opts.strength, projection=projection, stats=self.downstream.stats,
            keep_bos=opts.keep_bos,
        )
        steered = audio_direction(pooled, projection, self.downstream.stats) is not None

        request = generator_pb2.GenerateRequest(
            prompt_embeds=codec.to_tensor(np.ascontiguousarray(fused, dtype=np.float32)),
            negative_prompt_embeds=codec.to_tensor(np.ascontiguousarray(negative_e, dtype=np.float32)),
            seed=opts.seed, steps=opts.steps, guidance=opts.guidance, guidance_set=opts.guidance_set,
            width=opts.width, height=opts.height, scheduler=opts.scheduler,
        )
        image: dict[str, Any] = {}
        yield from self._generate(job, request, image)

        metadata = _metadata(
            opts, infos, self.downstream, decoded, sha256, len_bytes=upload_bytes,
            window=window, truncated=truncated, projection=projection, steered=steered,
            pooled=pooled, image=image, cache_hit=cached is not None,
        )
        metadata["stem_format"] = json_format.MessageToDict(stem_format)
        metadata["request"] = _resolved_request(first.options, opts)
        png = embed_metadata(image["png"], metadata)
        metadata_json = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
        yield _event(Stage.STAGE_DONE, 1, 1, message=f"{image['width']}x{image['height']} PNG, {len(png)} bytes")
        for start in range(0, len(png), RESULT_PIECE_BYTES):
            last = start + RESULT_PIECE_BYTES >= len(png)
            yield orchestrator_pb2.CreateImageResponse(
                result=orchestrator_pb2.ImageResult(
                    png=png[start : start + RESULT_PIECE_BYTES], last=last,
                    metadata_json=metadata_json if last else "",
                )
            )

    # -- stages -----------------------------------------------------------------------------------
    def _receive(
        self, job: Job, requests: Iterator[orchestrator_pb2.CreateImageRequest]
    ) -> tuple[bytearray, str]:
        limit = self.config.max_upload_bytes
        buf = bytearray()
        digest = hashlib.sha256()
        for req in requests:
            if req.WhichOneof("item") != "file_chunk":
                raise InvalidInput("options may come only once, as the first CreateImageRequest")
            if len(buf) + len(req.file_chunk) > limit:
                raise ResourceExhausted(
                    f"file: more than the upload limit of {limit} bytes (received {len(buf) + len(req.file_chunk)})"
                )
            buf += req.file_chunk
            digest.update(req.file_chunk)
        job.check()
        return buf, digest.hexdigest()  # decode_audio reads a bytearray as it is: no 256 MiB copy

    @staticmethod
    def _stem_format(infos: Infos) -> tensor_pb2.AudioFormat:
        enc = infos.audio_encoder
        wire = (
            tensor_pb2.DTYPE_FLOAT16 if tensor_pb2.DTYPE_FLOAT16 in enc.accepted_dtypes else tensor_pb2.DTYPE_FLOAT32
        )
        return tensor_pb2.AudioFormat(sample_rate=enc.sample_rate, channels=enc.channels, dtype=wire)

    def _separate_and_embed(
        self, job: Job, infos: Infos, decoded: DecodedAudio, stem_format: tensor_pb2.AudioFormat,
        frames: dict[str, np.ndarray], stamps: dict[str, np.ndarray],
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        """Stream the song to the separator and each needed stem into its own ``Embed`` call.

        Fills ``frames``/``stamps`` per stem and yields an EMBEDDING event as each stem finishes,
        which may be while later stems are still coming out of the separator.
        """
        ds = self.downstream
        sep_max = infos.separator.max_input_frames
        if sep_max and decoded.frames * infos.separator.sample_rate / decoded.sample_rate > sep_max * 1.001:
            raise ResourceExhausted(
                f"the song is {decoded.seconds:.0f} s; the separator accepts at most "
                f"{sep_max / max(infos.separator.sample_rate, 1):.0f} s"
            )

        def separate_requests() -> Iterator[separator_pb2.SeparateRequest]:
            yield separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions(output=stem_format))
            for chunk in codec.iter_audio_chunks(decoded.samples, decoded.sample_rate):
                if job.cancelled.is_set():
                    return
                yield separator_pb2.SeparateRequest(audio=chunk)

        call = job.track(
            ds.separator.Separate(
                separate_requests(), timeout=job.timeout(self.config.separate_timeout_seconds),
                metadata=job.metadata,
            )
        )
        queues: dict[str, queue.Queue[tensor_pb2.AudioChunk | None]] = {}
        embed_futures: dict[futures.Future[tuple[np.ndarray, np.ndarray]], str] = {}
        try:
            responses = iter(call)
            first = next(responses, None)
            if first is None or first.WhichOneof("item") != "header":
                raise AudioMemoryError("the separator's stream did not start with a StemsHeader")
            header = first.header
            missing = [s for s in STEM_ORDER if s not in header.stems]
            if missing:
                raise AudioMemoryError(f"the separator's stream lacks the stems {missing}")
            index = {name: i for i, name in enumerate(header.stems)}
            wanted = {index[s]: s for s in STEM_ORDER}
            for stem in STEM_ORDER:
                queues[stem] = queue.Queue()
                future = self._pool.submit(self._embed, job, infos, stem, queues[stem])
                embed_futures[future] = stem
            current = -1
            for response in responses:
                if response.WhichOneof("item") != "chunk":
                    raise AudioMemoryError("the separator sent a second header mid-stream")
                stem_index = response.chunk.stem
                if not 0 <= stem_index < len(header.stems) or stem_index < current:
                    raise AudioMemoryError(f"the separator sent stem index {stem_index} out of order")
                if stem_index != current:
                    # stems arrive one after another: earlier ones are complete, let their Embed finish
                    for i, name in wanted.items():
                        if i < stem_index:
                            queues[name].put(None)  # repeated Nones are harmless: the reader stops at one
                    current = stem_index
                if stem_index in wanted:
                    queues[wanted[stem_index]].put(response.chunk.audio)
                # report finished stems; an Embed that failed stops the separation here
                yield from self._collect([f for f in embed_futures if f.done()], embed_futures, frames, stamps)
        except grpc.RpcError as exc:
            raise rpc_error("separator", ds.targets["separator"], exc, job.context) from None
        finally:
            for q in queues.values():
                q.put(None)
        yield from self._collect(futures.as_completed(embed_futures), embed_futures, frames, stamps)

    @staticmethod
    def _collect(
        done: Iterable[futures.Future[tuple[np.ndarray, np.ndarray]]],
        stems: dict[futures.Future[tuple[np.ndarray, np.ndarray]], str],
        frames: dict[str, np.ndarray], stamps: dict[str, np.ndarray],
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        for future in done:
            stem = stems[future]
            if stem in frames:
                continue
            frames[stem], stamps[stem] = future.result()
            yield _event(Stage.STAGE_EMBEDDING, len(frames), len(STEM_ORDER), message=f"embedded {stem}")

    def _embed(
        self, job: Job, infos: Infos, stem: str, chunks: queue.Queue[tensor_pb2.AudioChunk | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        enc = infos.audio_encoder

        def requests() -> Iterator[audio_encoder_pb2.EmbedRequest]:
            while not job.cancelled.is_set():
                try:
                    item = chunks.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield audio_encoder_pb2.EmbedRequest(audio=item)

        call = job.track(
            self.downstream.audio_encoder.Embed(
                requests(), timeout=job.timeout(self.config.embed_timeout_seconds), metadata=job.metadata
            )
        )
        try:
            responses = iter(call)
            first = next(responses, None)
            if first is None or first.WhichOneof("item") != "header":
                raise AudioMemoryError(f"the audio encoder's stream for {stem} did not start with a header")
            header = first.header
            stamps = codec.from_tensor(header.timestamps, field=f"{stem}.timestamps", shape=(header.frames,),
                                       dtypes=("float64", "float32"), finite=True)
            assembler = codec.TensorAssembler(
                f"audio_encoder.embeddings[{stem}]", max_bytes=header.frames * enc.embedding_dim * 4 + 1,
                shape=(header.frames, enc.embedding_dim), dtypes=("float32", "float16"), finite=True,
            )
            for response in responses:
                assembler.add(response.embeddings)
            frames = np.asarray(assembler.result(), dtype=np.float32)
        except grpc.RpcError as exc:
            raise rpc_error("audio_encoder", self.downstream.targets["audio_encoder"], exc, job.context) from None
        return frames, np.asarray(stamps, dtype=np.float64)

    def _encode_text(self, job: Job, infos: Infos, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        text = infos.text_encoder
        try:
            call = job.track(
                self.downstream.text_encoder.Encode(
                    text_encoder_pb2.EncodeRequest(texts=texts),
                    timeout=job.timeout(self.config.encode_timeout_seconds), metadata=job.metadata,
                )
            )
            responses = iter(call)
            first = next(responses, None)
            if first is None or first.WhichOneof("item") != "header":
                raise AudioMemoryError("the text encoder's stream did not start with a header")
            truncated = list(first.header.truncated)
            embeddings = codec.assemble_tensor(
                (r.embeddings for r in responses), "text_encoder.embeddings",
                max_bytes=len(texts) * max(text.max_length, 1) * text.hidden_size * 4 + 1,
                shape=(len(texts), text.max_length or None, text.hidden_size),
                dtypes=("float32", "float16"), finite=True,
            )
        except grpc.RpcError as exc:
            raise rpc_error("text_encoder", self.downstream.targets["text_encoder"], exc, job.context) from None
        return np.asarray(embeddings, dtype=np.float32), truncated

    def _generate(
        self, job: Job, request: generator_pb2.GenerateRequest, image: dict[str, Any]
    ) -> Iterator[orchestrator_pb2.CreateImageResponse]:
        target = self.downstream.targets["generator"]
        attempts = self.config.generate_attempts
        for attempt in range(1, attempts + 1):
            started = False
            png = bytearray()
            yield _event(Stage.STAGE_GENERATING, 0, request.steps, message="generating"
                         if attempt == 1 else f"generator replica lost; retrying (attempt {attempt}/{attempts})")
            try:
                call = job.track(
                    self.downstream.generator.Generate(
                        request, timeout=job.timeout(self.config.generate_timeout_seconds), metadata=job.metadata
                    )
                )
                for response in call:
                    if response.WhichOneof("item") == "progress":
                        started = True
                        p = response.progress
                        image["denoising_steps"] = p.total
                        yield _event(Stage.STAGE_GENERATING, p.step, p.total, message=f"step {p.step}/{p.total}")
                    else:
                        started = True
                        chunk = response.image
                        png += chunk.png
                        if len(png) > 64 * 1024 * 1024:
                            raise AudioMemoryError("the generator's PNG passed 64 MiB")
                        if chunk.last:
                            image.update(png=bytes(png), width=chunk.width, height=chunk.height,
                                         scheduler=chunk.scheduler)
                if "png" not in image:
                    raise AudioMemoryError("the generator's stream ended without the last image piece")
                return
            except grpc.RpcError as exc:
                err = rpc_error("generator", target, exc, job.context)
                # A replica that dies mid-stream shows as UNAVAILABLE (or CANCELLED by a server that
                # is shutting down while our caller is still here). gRPC's own retries cannot help once
                # responses have started, so the whole deterministic call is made again.
                lost = isinstance(exc, grpc.Call) and exc.code() in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED
                )
                retryable = (
                    lost and started and attempt < attempts and job.context.is_active()
                    and not job.cancelled.is_set()
                )
                if not retryable:
                    raise err from None
                log.warning("generator failed mid-stream (%s); retrying the whole Generate", exc.details())
                time.sleep(0.2 * attempt)


def _resolved_request(sent: orchestrator_pb2.CreateImageOptions, opts: JobOptions) -> dict[str, Any]:
    """The options as sent, with the server defaults that applied filled in: to reproduce the image,
    ``json_format.ParseDict(metadata["request"], CreateImageOptions())`` and send the same song."""
    resolved = orchestrator_pb2.CreateImageOptions()
    resolved.CopyFrom(sent)
    resolved.lyrics_window = opts.window
    resolved.strength, resolved.strength_set = opts.strength, True
    resolved.projection_seed = opts.projection_seed
    return json_format.MessageToDict(resolved)


def _identity(model: Any) -> dict[str, Any]:
    """The parts of a ``ModelInfo`` that change a model's output (not where it runs)."""
    return {
        "backend": model.backend, "model_id": model.model_id, "revision": model.revision,
        "dtype": model.dtype, "extra": dict(model.extra),
    }


def _metadata(
    opts: JobOptions, infos: Infos, downstream: Downstream, decoded: DecodedAudio, sha256: str, *,
    len_bytes: int, window: str, truncated: list[bool], projection: Projection, steered: bool,
    pooled: np.ndarray, image: dict[str, Any], cache_hit: bool,
) -> dict[str, Any]:
    def as_dict(msg: Any) -> dict[str, Any]:
        return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)

    gen_info = infos.generator
    # requested steps (0 = the generator's default, then what it ran); a scheduler may run one more
    steps = opts.steps or image.get("denoising_steps", 0)
    return {
        "schema": SCHEMA_VERSION,
        "song": {
            "sha256": sha256, "filename": opts.filename, "bytes": len_bytes, "container": decoded.container,
            "codec": decoded.codec, "sample_rate": decoded.sample_rate, "channels": decoded.source_channels,
            "seconds": round(decoded.seconds, 3),
        },
        "lyrics": {
            "window": opts.window, "text": window, "negative_prompt": opts.negative_prompt,
            "truncated": truncated, "full": opts.lyrics,
        },
        "fusion": {
            "strength": opts.strength, "projection_seed": opts.projection_seed,
            "projection": projection.identity, "keep_bos": opts.keep_bos,
            "reference_stats": downstream.stats.identity if downstream.stats else None,
            "steered": steered, "stems": list(STEM_ORDER),
            "audio_vector_sha256": hashlib.sha256(np.ascontiguousarray(pooled, np.float32).tobytes()).hexdigest(),
        },
        "generation": {
            "seed": opts.seed, "steps": steps, "denoising_steps": image.get("denoising_steps", 0),
            "guidance": opts.guidance, "guidance_set": opts.guidance_set,
            "width": image["width"], "height": image["height"], "scheduler": image["scheduler"],
            "requested_scheduler": opts.scheduler, "requested_width": opts.width,
            "requested_height": opts.height, "native_size": gen_info.native_size,
        },
        "cache_hit": cache_hit,
        "services": {
            "orchestrator": {"model": as_dict(downstream.describe().to_proto("orchestrator",
                                                                              "audiomemory-orchestrator"))},
            "separator": as_dict(infos.separator),
            "audio_encoder": as_dict(infos.audio_encoder),
            "text_encoder": as_dict(infos.text_encoder),
            "generator": as_dict(infos.generator),
        },
        "created_unix": int(time.time()),
    }


def add_servicer(server: grpc.Server, backend: Downstream, gate: Gate, config: OrchestratorConfig) -> None:
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorServicer(backend, gate, config), server)

