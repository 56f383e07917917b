"""The gRPC ``Generator`` service: validate, run the backend under the gate, stream steps then the PNG.

The denoising loop runs on a worker thread so this handler can stream one ``StepProgress`` per step
while it runs. Cancellation: ``context.add_callback`` (fired when the call ends for any reason:
client cancel, deadline, disconnect) sets a flag the backend polls after every step. The handler
keeps the model slot until the worker has really stopped, so the next job never overlaps the tail
of a cancelled one.
"""

from __future__ import annotations

import contextvars
import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from audiomemory.generator import backends as limits  # the MIN_/MAX_ bounds check_request enforces
from audiomemory.generator.backends import (
    GeneratedImage,
    GenerationStopped,
    GeneratorBackend,
    ImageRequest,
    check_request,
)
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.codec import CHUNK_BYTES, from_tensor, iter_pieces
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.service import Gate
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

SERVICE = "generator"
EMBED_DTYPES = ("float32", "float16")
MAX_PROMPT_TOKENS = 77 * 4  # generous: SD was trained with 77; more only burns memory


@dataclass(frozen=True)
class _Step:
    step: int
    total: int


@dataclass(frozen=True)
class _Done:
    result: GeneratedImage | None
    error: BaseException | None


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    """Thin edge: protobuf ⇄ ``ImageRequest``/PNG; the backend paints."""

    def __init__(self, backend: GeneratorBackend, gate: Gate, config: GeneratorConfig) -> None:
        self.backend = backend
        self.gate = gate
        self.config = config

    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> generator_pb2.GeneratorInfo:
        self.gate.check_ready()
        return generator_pb2.GeneratorInfo(
            model=self.backend.describe().to_proto(SERVICE, package="audiomemory-generator"),
            cross_attention_dim=self.backend.cross_attention_dim,
            max_length=self.backend.max_length,
            native_size=self.backend.native_size,
            schedulers=self.backend.schedulers,
            # The limits check_request enforces and the defaults _request fills in.
            default_steps=self.config.default_steps,
            min_steps=limits.MIN_STEPS,
            max_steps=limits.MAX_STEPS,
            default_guidance=self.config.default_guidance,
            min_guidance=limits.MIN_GUIDANCE,
            max_guidance=limits.MAX_GUIDANCE,
            default_size=self.config.default_size,
            min_size=limits.MIN_SIZE,
            max_size=limits.MAX_SIZE,
            size_multiple=limits.SIZE_MULTIPLE,
        )

    def _embeds(self, msg: Any, field: str) -> np.ndarray:
        dim = self.backend.cross_attention_dim
        if not msg.shape:
            raise InvalidInput(f"{field}: required, a [1, L, {dim}] float32 or float16 tensor; got none")
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
            shape=(1, None, dim),
            dtypes=EMBED_DTYPES,
            finite=True,
            max_bytes=MAX_PROMPT_TOKENS * dim * 4,
        )
        if arr.shape[1] < 1:
            raise InvalidInput(f"{field}.shape[1]: at least one token is required, got 0")
        return arr

    def _request(self, msg: generator_pb2.GenerateRequest) -> ImageRequest:
        prompt = self._embeds(msg.prompt_embeds, "prompt_embeds")
        negative = self._embeds(msg.negative_prompt_embeds, "negative_prompt_embeds")
        request = ImageRequest(
            prompt_embeds=prompt,
            negative_prompt_embeds=negative,
            seed=int(msg.seed),
            steps=msg.steps or self.config.default_steps,
            guidance=float(msg.guidance) if msg.HasField("guidance") else self.config.default_guidance,
            width=msg.width or self.config.default_size,
            height=msg.height or self.config.default_size,
            scheduler=msg.scheduler or self.backend.default_scheduler,
        )
        # Everything is checked before a model slot is taken: bad input fails fast even when busy.
        check_request(
            request, cross_attention_dim=self.backend.cross_attention_dim, schedulers=self.backend.schedulers
        )
        return request

    def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[generator_pb2.GenerateResponse]:
        self.gate.check_ready()
        image_request = self._request(request)
        stop = threading.Event()
        # Fires on cancel, deadline, disconnect — and normal end; False means the call already ended.
        if not context.add_callback(stop.set):
            stop.set()
        events: queue.Queue[_Step | _Done] = queue.Queue()

        def should_stop() -> bool:
            return stop.is_set() or not context.is_active()

        def work() -> None:
            try:
                result = self.backend.generate(
                    image_request, lambda step, total: events.put(_Step(step, total)), should_stop
                )
                events.put(_Done(result, None))
            except BaseException as exc:  # handed to the RPC thread, which raises it
                events.put(_Done(None, exc))

        with self.gate.admit(context) as turn:
            for position in turn.waiting():
                yield generator_pb2.GenerateResponse(
                    queued=common_pb2.QueueStatus(position=position, running=self.gate.running_count)
                )
            # copy_context: the worker logs under this call's request id.
            worker = threading.Thread(
                target=contextvars.copy_context().run, args=(work,), name="am-generator-denoise", daemon=True
            )
            worker.start()
            try:
                while True:
                    event = events.get()
                    if isinstance(event, _Step):
                        yield generator_pb2.GenerateResponse(
                            progress=generator_pb2.StepProgress(step=event.step, total=event.total)
                        )
                        continue
                    if event.error is not None:
                        if isinstance(event.error, GenerationStopped) and not context.is_active():
                            return  # the caller is gone (cancel/deadline): nobody to answer
                        raise event.error
                    assert event.result is not None
                    generated = event.result
                    break
            finally:
                # Reached early when the client cancels mid-stream (GeneratorExit at a yield): stop the
                # loop and keep the slot until it has stopped, at most one denoising step away.
                stop.set()
                worker.join()
        yield from _image_chunks(generated)


def _image_chunks(generated: GeneratedImage) -> Iterator[generator_pb2.GenerateResponse]:
    buffer = io.BytesIO()
    generated.image.save(buffer, format="PNG")
    png = buffer.getvalue()
    width, height = generated.image.size
    for piece, last in iter_pieces(png, CHUNK_BYTES):
        yield generator_pb2.GenerateResponse(
            image=generator_pb2.ImageChunk(
                png=piece, last=last, width=width, height=height, scheduler=generated.scheduler
            )
        )


def add_servicer(server: grpc.Server, backend: GeneratorBackend, gate: Gate, config: GeneratorConfig) -> None:
    generator_pb2_grpc.add_GeneratorServicer_to_server(GeneratorServicer(backend, gate, config), server)
