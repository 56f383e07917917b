"""The gRPC ``Generator`` service: validate, run the backend under the gate, stream steps then the PNG.

The call opens as every model call does (``runtime.servicer``: the pin, a place in line, the ``Served`` header
with the steps, guidance, scheduler and size this request resolved, the place in line while it waits). The
denoising loop runs on a ``Worker`` thread so this handler can stream one ``StepProgress`` per step while it
runs; the backend polls the worker's stop flag after every step, and the slot is held until the loop has
really stopped, so the next job never overlaps the tail of a cancelled one. The PNG is sent after the slot
is given back.

A request may carry a batch (``seeds``: item i of ``prompt_embeds`` ``[B, L, D]`` painted with ``seeds[i]``):
one ``StepProgress`` per denoising step of the whole batch, then each item's PNG in order, its pieces
tagged with its ``index``. ``max_batch`` (``Describe``) is the setting, lowered so that a request of that many
prompts and as many negative prompts, ``max_length`` tokens each in float32, fits ``max_message_bytes``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np

from audiomemory.generator import backends as limits  # the MIN_/MAX_ bounds check_request enforces
from audiomemory.generator.backends import GeneratedImage, GeneratorBackend, ImageRequest, check_request
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.codec import CHUNK_BYTES, batch_fits, from_tensor, iter_pieces
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.servicer import ModelServicer, Worker
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

SERVICE = "generator"
EMBED_DTYPES = ("float32", "float16")
MAX_PROMPT_TOKENS = 77 * 4  # generous: SD was trained with 77; more only burns memory


class GeneratorServicer(ModelServicer[GeneratorBackend, GeneratorConfig], generator_pb2_grpc.GeneratorServicer):
    """Thin edge: protobuf ⇄ ``ImageRequest``/PNG; the backend paints."""

    kind = SERVICE
    package = "audiomemory-generator"

    def info(self, model: common_pb2.ModelInfo) -> generator_pb2.GeneratorInfo:
        b, c = self.backend, self.config
        return generator_pb2.GeneratorInfo(
            model=model, cross_attention_dim=b.cross_attention_dim, max_length=b.max_length,
            native_size=b.native_size, schedulers=b.schedulers,
            # The limits check_request enforces and the defaults _request fills in.
            default_steps=c.default_steps, min_steps=limits.MIN_STEPS, max_steps=limits.MAX_STEPS,
            default_guidance=c.default_guidance, min_guidance=limits.MIN_GUIDANCE, max_guidance=limits.MAX_GUIDANCE,
            default_size=c.default_size, min_size=limits.MIN_SIZE, max_size=limits.MAX_SIZE,
            size_multiple=limits.SIZE_MULTIPLE, max_batch=self.max_batch,
            sizes=[generator_pb2.ImageSize(width=w, height=h) for w, h in b.sizes],
        )

    @property
    def max_batch(self) -> int:
        """``max_batch`` as ``Describe`` publishes it and ``Generate`` enforces it: the setting, lowered so that
        that many prompts and negative prompts, ``max_length`` tokens each in float32, fit one message."""
        fits = batch_fits(self.config.max_message_bytes, self.backend.max_length, self.backend.cross_attention_dim)
        return min(self.config.max_batch, fits)

    def _embeds(self, msg: Any, field: str, rows: int | None) -> np.ndarray:
        """A ``[rows, L, D]`` tensor (``rows`` None: 1 or the batch's size, which the request check matches)."""
        dim = self.backend.cross_attention_dim
        if not msg.shape:
            raise InvalidInput(f"{field}: required, a [{rows or 'B'}, L, {dim}] float32 or float16 tensor; got none")
        shape = [int(d) for d in msg.shape]
        # The model mismatch first: it is the likeliest mistake and its message says what to fix.
        if len(shape) == 3 and shape[2] != dim:
            raise InvalidInput(
                f"{field}: embedding dim {shape[2]} does not match the generator's cross-attention dim "
                f"{dim}; the text encoder and generator models do not fit together"
            )
        arr = from_tensor(
            msg,
            field=field,
            shape=(rows, None, dim),
            dtypes=EMBED_DTYPES,
            finite=True,
            max_bytes=self.max_batch * MAX_PROMPT_TOKENS * dim * 4,
        )
        if arr.shape[1] < 1:
            raise InvalidInput(f"{field}.shape[1]: at least one token is required, got 0")
        return arr

    def _request(self, msg: generator_pb2.GenerateRequest) -> ImageRequest:
        seeds = tuple(int(seed) for seed in msg.seeds)
        if len(seeds) > self.max_batch:  # before any tensor is decoded
            raise InvalidInput(
                f"seeds: a batch has at most {self.max_batch} items (the generator's max_batch), got {len(seeds)}"
            )
        # One prompt: [1, L, D] both. A batch: prompt_embeds one row per seed, the negative 1 (shared) or B rows.
        prompt = self._embeds(msg.prompt_embeds, "prompt_embeds", len(seeds) or 1)
        negative = self._embeds(msg.negative_prompt_embeds, "negative_prompt_embeds", None if seeds else 1)
        request = ImageRequest(
            prompt_embeds=prompt,
            negative_prompt_embeds=negative,
            seed=int(msg.seed),
            steps=msg.steps or self.config.default_steps,
            guidance=float(msg.guidance) if msg.HasField("guidance") else self.config.default_guidance,
            width=msg.width or self.config.default_size,
            height=msg.height or self.config.default_size,
            scheduler=msg.scheduler or self.backend.default_scheduler,
            seeds=seeds,
        )
        # Everything is checked before a model slot is taken: bad input fails fast even when busy.
        check_request(
            request, cross_attention_dim=self.backend.cross_attention_dim, schedulers=self.backend.schedulers,
            max_batch=self.max_batch, sizes=self.backend.sizes,
        )
        return request

    def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[generator_pb2.GenerateResponse]:
        model = self.model()
        image = self._request(request)
        resolved: dict[str, object] = {"steps": image.steps, "guidance": image.guidance, "scheduler": image.scheduler,
                                       "width": image.width, "height": image.height}
        if image.seeds:
            resolved.update(batch=len(image.seeds), batch_unet=self.backend.batch_unet(image))
        worker: Worker[tuple[int, int], list[GeneratedImage]] = Worker(
            context, lambda report, stop: self._paint(image, lambda *step: report(step), stop),
            name="am-generator-denoise",
        )
        with self.admitted(context, model, request.pin, resolved, generator_pb2.GenerateResponse) as opening:
            yield from opening
            for step, total in worker.reports():
                yield generator_pb2.GenerateResponse(progress=generator_pb2.StepProgress(step=step, total=total))
        for index, generated in enumerate(worker.result or ()):  # None: stopped because the caller is gone
            yield from _image_chunks(generated, index)

    def _paint(
        self, image: ImageRequest, on_step: Callable[[int, int], None], should_stop: Callable[[], bool]
    ) -> list[GeneratedImage]:
        if image.seeds:
            return self.backend.generate_batch(image, on_step, should_stop)
        return [self.backend.generate(image, on_step, should_stop)]


def _image_chunks(generated: GeneratedImage, index: int = 0) -> Iterator[generator_pb2.GenerateResponse]:
    buffer = io.BytesIO()
    generated.image.save(buffer, format="PNG")
    png = buffer.getvalue()
    width, height = generated.image.size
    for piece, last in iter_pieces(png, CHUNK_BYTES):
        yield generator_pb2.GenerateResponse(
            image=generator_pb2.ImageChunk(
                png=piece, last=last, width=width, height=height, scheduler=generated.scheduler, index=index
            )
        )


def add_servicer(server: grpc.Server, backend: GeneratorBackend, gate: Gate, config: GeneratorConfig) -> None:
    generator_pb2_grpc.add_GeneratorServicer_to_server(GeneratorServicer(backend, gate, config), server)
