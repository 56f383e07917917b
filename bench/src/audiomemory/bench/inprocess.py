"""The same pipeline with the four backends called in this process: no gRPC, no services.

For benchmarks (gRPC overhead = service path / this path) and for debugging a backend. It runs
exactly the orchestrator's own pieces — ``decode_audio``, ``pool_stems``, ``lyrics_window``,
``fuse`` — and mirrors the service path's data handling: stems converted to the audio encoder's
rate, channels and length by the separator service's own ``to_output_format``, rounded through
float16 when the encoder accepts it (as on the wire),
the four stems embedded concurrently, the text encoded in one batched call.

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
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiomemory.orchestrator.decode import DecodedAudio, decode_audio
from audiomemory.orchestrator.fusion import STEM_ORDER, Projection, fuse, pool_stems
from audiomemory.orchestrator.lyrics import lyrics_window


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
        self._pool = futures.ThreadPoolExecutor(max_workers=len(STEM_ORDER), thread_name_prefix="am-inproc")

    def front_half(self, decoded: DecodedAudio) -> tuple[np.ndarray, dict[str, float]]:
        """Separate, convert, embed the four stems concurrently, pool → ``(a, timings)``."""
        # The separator service's own conversion (it converts the stems for the encoder on that path).
        from audiomemory.separator.audio import expected_frames, to_output_format

        t0 = time.perf_counter()
        stems = self.separator.separate(decoded.samples, decoded.sample_rate)
        t1 = time.perf_counter()
        enc = self.audio_encoder
        rate, channels = enc.sample_rate, enc.channels or stems.audio.shape[1]
        length = expected_frames(decoded.samples.shape[1], decoded.sample_rate, rate)

        def embed(name: str) -> tuple[str, np.ndarray]:
            audio = to_output_format(stems.audio[stems.names.index(name)], stems.sample_rate, rate, channels, length,
                                     float16=self.wire_float16)
            if self.wire_float16:
                audio = audio.astype(np.float16).astype(np.float32)  # the wire's rounding
            frames, _ = enc.embed(audio, rate)
            return name, frames

        frames = dict(self._pool.map(embed, STEM_ORDER))
        pooled = pool_stems(frames)
        return pooled, {"separate": t1 - t0, "embed": time.perf_counter() - t1}

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
