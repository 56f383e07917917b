"""The job with the backends called in this process: the in-process adapter of ``orchestrator.stages``.

``InProcessStages`` implements the stage interface the orchestrator's job (``orchestrator.pipeline``) is
written against, with loaded backends instead of gRPC services; ``InProcessPipeline.run`` runs that same
job code on it. So gRPC overhead = service path / this path, measured on one job. The services' own
streaming steps are used: the separator's blocks converted to the audio encoder's rate, channels and
length by the separator's ``StemConverter``, handed on as the wire's ``AudioChunk``s (float16 when the
encoder accepts it), the four stems embedded in one ``EmbedStream``, the text encoded in one batched call.
Each stage opens with a ``Served`` header built from its backend's ``describe()``, and honours a pin.

    pipeline = InProcessPipeline(separator, audio_encoder, text_encoder, generator)  # loaded backends
    result = pipeline.run(song_bytes, lyrics="...", seed=7, steps=4)
    result.png, result.record, result.timings  # seconds from the start to the end of each stage

It lives in the development-only ``audiomemory-bench`` distribution, which declares every distribution it
imports; no service image installs it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from audiomemory.orchestrator.cache import AudioCache
from audiomemory.orchestrator.compatibility import Infos
from audiomemory.orchestrator.fusion import Fusion
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.pipeline import Limits, Pipeline, Result, Upload
from audiomemory.orchestrator.stages import (
    Embedded,
    Encoded,
    Event,
    Frames,
    Painted,
    Painting,
    Pin,
    Served,
    StemFormat,
    StemPiece,
    StemsStarted,
    Step,
)
from audiomemory.runtime import identity
from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.codec import from_tensor
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.runtime.gate import Gate
from audiomemory.v1 import common_pb2, orchestrator_pb2, tensor_pb2

_PACKAGES = {kind: f"audiomemory-{kind.replace('_', '-')}" for kind in
             ("separator", "audio_encoder", "text_encoder", "generator")}


def _servicer(kind: str, backend: Any, config: Any | None) -> Any:
    """The service's own servicer over ``backend`` (``config``, else its defaults), for its ``Describe``."""
    from audiomemory.stack import definition

    module = __import__(f"audiomemory.{kind}.servicer", fromlist=["*"])
    cls = next(v for k, v in vars(module).items() if k.endswith("Servicer") and k[0] != "_" and
               getattr(v, "__module__", "") == module.__name__)
    gate = Gate(1, 0)
    gate.ready.set()
    return cls(backend, gate, config if config is not None else definition(kind).config_class())


class InProcessStages:
    """Loaded backends of the four kinds (``load()`` already called), as the job's stages."""

    def __init__(self, separator: Any, audio_encoder: Any, text_encoder: Any, generator: Any,
                 configs: dict[str, Any] | None = None) -> None:
        self.backends = {"separator": separator, "audio_encoder": audio_encoder, "text_encoder": text_encoder,
                         "generator": generator}
        self.servicers = {kind: _servicer(kind, backend, (configs or {}).get(kind))
                          for kind, backend in self.backends.items()}
        self._infos: Infos | None = None

    def describe(self, job: Job) -> Infos:
        if self._infos is None:
            request = common_pb2.DescribeRequest()
            self._infos = Infos(**{kind: s.Describe(request, None) for kind, s in self.servicers.items()})
        return self._infos

    def _served(self, kind: str, pin: Pin, **resolved: object) -> Served:
        model = getattr(self.describe(None), kind).model  # type: ignore[arg-type]
        identity.check_pin(pin, model, kind)
        return identity.served(model, resolved)

    def separate(
        self, job: Job, audio: np.ndarray, sample_rate: int, fmt: StemFormat, stems: tuple[str, ...], pin: Pin,
    ) -> Iterator[Served | StemsStarted | StemPiece]:
        from audiomemory.separator.audio import StemConverter, expected_frames

        sep = self.backends["separator"]
        yield self._served("separator", pin, stems=",".join(stems), sample_rate=fmt.sample_rate,
                           channels=fmt.channels, dtype=fmt.dtype)
        order = [sep.stems.index(name) for name in stems]
        frames = expected_frames(audio.shape[1], sample_rate, fmt.sample_rate)
        converter = StemConverter(len(order), sep.channels, sep.sample_rate, fmt.sample_rate, fmt.channels, frames,
                                  float16=fmt.dtype == "float16")
        yield StemsStarted(stems, frames)
        for block in sep.separate_blocks(audio, sample_rate, cancelled=job.cancelled.is_set):
            yield from _pieces(converter.convert(block.audio[order]), fmt)
        yield from _pieces(converter.finish(), fmt)

    def embed(
        self, job: Job, signals: int, input_frames: int, pieces: Iterator[tuple[int, tensor_pb2.AudioChunk]],
        dim: int, pin: Pin,
    ) -> Iterator[Served | Frames | Embedded]:
        from audiomemory.audio_encoder.stream import EmbedStream

        enc = self.backends["audio_encoder"]
        hop = enc.hop_for(input_frames / enc.sample_rate)
        rate = enc.sample_rate
        yield self._served("audio_encoder", pin, hop_seconds=hop / rate, window_seconds=enc.window / rate,
                           embedding_dim=enc.embedding_dim)
        stream = EmbedStream(enc, signals, hop=hop)
        counts = [0] * signals
        for signal, chunk in pieces:
            audio = from_tensor(chunk.samples, field="audio", shape=(chunk.channels, None),
                                dtypes=("float32", "float16"))
            for frames in stream.add(signal, np.asarray(audio, np.float32), chunk.sample_rate):
                counts[frames.signal] += len(frames.embeddings)
                yield Frames(frames.signal, frames.embeddings, sum(counts), 0)
        for frames in stream.finish():
            counts[frames.signal] += len(frames.embeddings)
            yield Frames(frames.signal, frames.embeddings, sum(counts), 0)
        yield Embedded(tuple(counts))

    def transcribe(self, job: Job, input_frames: int, pieces: Iterator[tensor_pb2.AudioChunk],
                   pin: Pin) -> Iterator[Any]:
        raise AudioMemoryError("the in-process stages have no transcriber")

    def encode(self, job: Job, texts: list[str], dims: tuple[int, int], pin: Pin) -> Iterator[Served | Encoded]:
        text = self.backends["text_encoder"]
        yield self._served("text_encoder", pin, max_length=text.max_length, hidden_size=text.hidden_size)
        encoded = text.encode(texts)
        yield Encoded(np.asarray(encoded.embeddings, dtype=np.float32), tuple(encoded.truncated))

    def max_batch(self, infos: Infos) -> int:
        return max(1, infos.generator.max_batch)

    def generate(self, job: Job, painting: Painting, pin: Pin) -> Iterator[Served | Step | Painted]:
        from audiomemory.generator.backends import ImageRequest

        gen = self.servicers["generator"]
        config = gen.config
        request = ImageRequest(
            prompt_embeds=np.ascontiguousarray(painting.prompt_embeds), seed=painting.seed,
            negative_prompt_embeds=np.ascontiguousarray(painting.negative_prompt_embeds),
            steps=painting.steps or config.default_steps,
            guidance=config.default_guidance if painting.guidance is None else painting.guidance,
            width=painting.width or config.default_size, height=painting.height or config.default_size,
            scheduler=painting.scheduler or gen.backend.default_scheduler, seeds=tuple(painting.seeds),
        )
        resolved: dict[str, object] = {"steps": request.steps, "guidance": request.guidance,
                                       "scheduler": request.scheduler, "width": request.width, "height": request.height}
        if request.seeds:
            resolved.update(batch=len(request.seeds), batch_unet=gen.backend.batch_unet(request))
        yield self._served("generator", pin, **resolved)
        if request.seeds:
            generated = gen.backend.generate_batch(request, lambda step, total: None, job.cancelled.is_set)
        else:
            generated = [gen.backend.generate(request, lambda step, total: None, job.cancelled.is_set)]
        for index, image in enumerate(generated):
            buf = io.BytesIO()
            image.image.save(buf, format="PNG")
            width, height = image.image.size
            yield Painted(buf.getvalue(), width, height, image.scheduler, index)


def _pieces(stems: np.ndarray, fmt: StemFormat) -> Iterator[StemPiece]:
    for index, stem in enumerate(stems):
        for chunk in iter_audio_chunks(stem, fmt.sample_rate, dtype=fmt.dtype):
            yield StemPiece(index, int(chunk.samples.shape[1]), chunk)


class _NoRoom:
    def resize(self, weight: int) -> None:
        pass


class InProcessPipeline:
    """The orchestrator's job (``orchestrator.pipeline.Pipeline``) on ``InProcessStages``; no cache."""

    def __init__(self, separator: Any, audio_encoder: Any, text_encoder: Any, generator: Any,
                 *, configs: dict[str, Any] | None = None, fusion: Fusion | None = None) -> None:
        from audiomemory.orchestrator.config import OrchestratorConfig

        config = OrchestratorConfig()
        self.stages = InProcessStages(separator, audio_encoder, text_encoder, generator, configs)
        self.fusion = fusion or Fusion.from_files(None, None, default_strength=config.strength,
                                                  default_projection_seed=config.projection_seed)
        limits = Limits(config.max_upload_bytes, config.max_seconds, config.max_sample_rate, config.max_lyrics_chars,
                        "in-process")
        self.pipeline = Pipeline(self.stages, AudioCache("/nonexistent", 0), self.fusion, limits,
                                 lambda: common_pb2.ModelInfo(backend="in-process"))

    def run(self, data: bytes, *, report: Callable[[Event], None] | None = None, **options: Any) -> Result:
        """One job; ``options`` are ``CreateImageOptions`` fields (lyrics, seed, steps, strength, …); ``report``
        gets the job's progress events (from the job's threads), as the servicer would relay them."""
        sent = orchestrator_pb2.CreateImageOptions(**options)
        job = Job(None, stall_seconds=3600.0)
        try:
            upload = Upload(data, hashlib.sha256(data).hexdigest(), _NoRoom())
            return self.pipeline.run(job, sent, lambda: upload, report or (lambda event: None))
        finally:
            job.cancel_all()
