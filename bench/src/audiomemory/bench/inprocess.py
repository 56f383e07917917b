"""The same pipeline with the four backends called in this process: no gRPC, no services.

For benchmarks (gRPC overhead = service path / this path) and for debugging a backend. It runs
exactly the orchestrator's own pieces — ``decode_audio``, ``StemPool``, ``lyrics_window``, ``fuse``
— and the services' own streaming steps: the separator's blocks converted to the audio encoder's rate,
channels and length by the separator's ``StemConverter``, rounded through float16 when the encoder
accepts it (as on the wire), the four stems embedded in one ``EmbedStream`` (windows of all four
batched together), the text encoded in one batched call.

    pipeline = InProcessPipeline(separator, audio_encoder, text_encoder, generator)  # loaded backends
    result = pipeline.run(song_bytes, lyrics="...", seed=7, steps=4, width=256, height=256)
    result.png, result.timings  # seconds per stage

Generation defaults are not resolved here: pass ``steps``, ``guidance``, ``width``, ``height``.

It lives in the development-only ``audiomemory-bench`` distribution (``bench/``), which declares
every distribution it imports (the orchestrator's pieces, the separator's conversion, the
generator's request type); no service image installs it.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomemory.orchestrator.decode import DecodedAudio, decode_audio
from audiomemory.orchestrator.fusion import Projection, fuse
from audiomemory.orchestrator.lyrics import lyrics_window
from audiomemory.orchestrator.pooling import STEM_ORDER, StemPool


@dataclass
class InProcessResult:
    png: bytes
    pooled: np.ndarray
    fused: np.ndarray
    negative: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


class InProcessPipeline:
    """Loaded backends of the four kinds (``load()`` already called)."""

    def __init__(self, separator: Any, audio_encoder: Any, text_encoder: Any, generator: Any,
                 *, wire_float16: bool = True) -> None:
        self.separator = separator
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.generator = generator
        self.wire_float16 = wire_float16

    def front_half(self, decoded: DecodedAudio) -> tuple[np.ndarray, dict[str, float]]:
        """Separate block by block, convert each block as the separator service does, embed the four stems
        as the audio encoder service does (one stream, windows batched across stems), pool → ``(a, timings)``.

        The same steps as the services, in one thread: the separator's ``separate_blocks`` and
        ``StemConverter`` (rate, channels, length, float16 range), the wire's float16 rounding, the
        encoder's ``EmbedStream`` at the hop for the song's length, the orchestrator's ``StemPool``.
        """
        from audiomemory.audio_encoder.stream import EmbedStream
        from audiomemory.separator.audio import StemConverter, expected_frames

        sep, enc = self.separator, self.audio_encoder
        rate, channels = enc.sample_rate, enc.channels or sep.channels
        order = [sep.stems.index(name) for name in STEM_ORDER]
        announced = expected_frames(decoded.frames, decoded.sample_rate, rate)  # the orchestrator's input_frames
        converter = StemConverter(len(order), sep.channels, sep.sample_rate, rate, channels, announced,
                                  float16=self.wire_float16)
        stream = EmbedStream(enc, len(STEM_ORDER), hop=enc.hop_for(announced / rate))
        pool = StemPool(STEM_ORDER)
        timings = {"separate": 0.0, "embed": 0.0}

        def embed(stems: np.ndarray) -> None:
            start = time.perf_counter()
            if self.wire_float16:
                stems = stems.astype(np.float16).astype(np.float32)  # the wire's rounding
            for signal, audio in enumerate(stems):
                for frames in stream.add(signal, audio, rate):
                    pool.add(frames.signal, frames.embeddings)
            timings["embed"] += time.perf_counter() - start

        start = time.perf_counter()
        for block in sep.separate_blocks(decoded.samples, decoded.sample_rate):
            timings["separate"] += time.perf_counter() - start
            embed(converter.convert(block.audio[order]))
            start = time.perf_counter()
        embed(converter.finish())
        start = time.perf_counter()
        for frames in stream.finish():
            pool.add(frames.signal, frames.embeddings)
        timings["embed"] += time.perf_counter() - start
        return pool.result(), timings

    def run(self, data: bytes, *, lyrics: str = "", window: str = "salient", negative_prompt: str = "",
            strength: float = 0.1, projection_seed: int = 0, keep_bos: bool = False, seed: int = 0,
            steps: int = 30, guidance: float = 7.5, width: int = 512, height: int = 512, scheduler: str = "",
            ) -> InProcessResult:
        from audiomemory.generator.backends import ImageRequest  # the generator's own request type

        timings: dict[str, float] = {}
        t = time.perf_counter()
        decoded = decode_audio(data)
        timings["decode"] = time.perf_counter() - t
        pooled, front = self.front_half(decoded)
        timings.update(front)
        t = time.perf_counter()
        encoded = self.text_encoder.encode([lyrics_window(lyrics, window), negative_prompt])
        embeddings = np.asarray(encoded.embeddings, dtype=np.float32)
        timings["encode_text"] = time.perf_counter() - t
        t = time.perf_counter()
        projection = Projection.from_seed(embeddings.shape[-1], projection_seed, pooled.size)
        fused = fuse(embeddings[0:1], pooled, strength, projection=projection, keep_bos=keep_bos)
        negative = np.ascontiguousarray(embeddings[1:2])
        timings["fuse"] = time.perf_counter() - t
        t = time.perf_counter()
        request = ImageRequest(
            prompt_embeds=np.ascontiguousarray(fused), negative_prompt_embeds=negative, seed=seed, steps=steps,
            guidance=guidance, width=width, height=height,
            scheduler=scheduler or self.generator.default_scheduler,
        )
        generated = self.generator.generate(request, lambda step, total: None, lambda: False)
        buf = io.BytesIO()
        generated.image.save(buf, format="PNG")
        timings["generate"] = time.perf_counter() - t
        return InProcessResult(png=buf.getvalue(), pooled=pooled, fused=fused, negative=negative, timings=timings)
