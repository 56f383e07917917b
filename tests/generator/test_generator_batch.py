"""Batched Generate over real gRPC with the tiny model: several prompts in one call, item i painted as alone.

A batch is ``prompt_embeds`` ``[B, L, D]`` with one seed per item (``seeds``) and a shared ``[1, L, D]`` (or
per-item ``[B, L, D]``) negative prompt; the call streams one ``StepProgress`` per denoising step of the whole
batch, then each item's PNG in order, its pieces tagged with ``ImageChunk.index``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from audiomemory.generator.backends import GeneratorBackend, ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.servicer import GeneratorServicer
from audiomemory.runtime.codec import batch_fits, to_tensor
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

GenStub = generator_pb2_grpc.GeneratorStub
DIM = 32  # the tiny UNet's cross-attention dim
SEEDS = (11, 2**64 - 1, 0)


def prompts(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 77, DIM)).astype(np.float32)


NEGATIVE = np.random.default_rng(99).standard_normal((1, 77, DIM)).astype(np.float32)


def batch_request(prompt: np.ndarray, negative: np.ndarray, seeds: tuple[int, ...], **fields: Any
                  ) -> generator_pb2.GenerateRequest:
    fields = {"steps": 2, "width": 64, "height": 64, "guidance": 7.5, **fields}
    return generator_pb2.GenerateRequest(prompt_embeds=to_tensor(prompt), negative_prompt_embeds=to_tensor(negative),
                                         seeds=seeds, **fields)


def one_request(prompt: np.ndarray, negative: np.ndarray, seed: int, **fields: Any) -> generator_pb2.GenerateRequest:
    fields = {"steps": 2, "width": 64, "height": 64, "guidance": 7.5, **fields}
    return generator_pb2.GenerateRequest(prompt_embeds=to_tensor(prompt), negative_prompt_embeds=to_tensor(negative),
                                         seed=seed, **fields)


def run(stub: GenStub, request: generator_pb2.GenerateRequest) -> tuple[
        common_pb2.Served, list[tuple[int, int]], list[bytes], list[generator_pb2.ImageChunk]]:
    """One call: its header, its (step, total) events, its PNGs by index and every image piece."""
    served, steps, chunks = None, [], []
    for response in stub.Generate(request, timeout=60):
        item = response.WhichOneof("item")
        if item == "served":
            served = response.served
        elif item == "progress":
            assert not chunks, "progress after the images started"
            steps.append((response.progress.step, response.progress.total))
        elif item == "image":
            chunks.append(response.image)
    assert served is not None
    pngs: list[bytes] = []
    piece = b""
    for chunk in chunks:
        assert chunk.index == len(pngs), "an image's pieces out of order"
        piece += chunk.png
        if chunk.last:
            pngs.append(piece)
            piece = b""
    assert piece == b"", "the last image ended without its last piece"
    return served, steps, pngs, chunks


@pytest.mark.parametrize("scheduler", ["pndm", "euler_a", "dpm++2m"])
def test_each_item_of_a_batch_is_the_image_its_prompt_and_seed_paint_alone(
    generator: GenStub, scheduler: str
) -> None:
    # euler_a draws fresh noise at every step: each item draws it from its own seed's generator, as alone.
    prompt = prompts(len(SEEDS))
    served, steps, pngs, chunks = run(generator, batch_request(prompt, NEGATIVE, SEEDS, scheduler=scheduler))
    alone = [run(generator, one_request(prompt[i:i + 1], NEGATIVE, seed, scheduler=scheduler))
             for i, seed in enumerate(SEEDS)]
    assert pngs == [a[2][0] for a in alone]  # bit for bit: the PNG bytes are equal
    assert len(set(pngs)) == len(SEEDS)
    # One progress event per denoising step of the whole batch, as many as one image's.
    assert steps == alone[0][1] and len(steps) >= 2
    assert served.resolved["batch"] == str(len(SEEDS)) and "batch" not in alone[0][0].resolved
    assert served.resolved["batch_unet"] == "batched"  # auto, on a CPU in float32
    assert {(c.width, c.height, c.scheduler) for c in chunks} == {(64, 64, scheduler)}


def test_without_guidance_each_item_is_still_the_image_alone(generator: GenStub) -> None:
    # guidance <= 1: no classifier-free guidance, one UNet row per item, and oneDNN convolves one row otherwise
    # than several: such a batch runs per item.
    prompt = prompts(2, seed=5)
    served, _, pngs, _ = run(generator, batch_request(prompt, NEGATIVE, (4, 5), guidance=1.0, scheduler="ddim"))
    assert served.resolved["batch_unet"] == "per_item"
    assert pngs == [run(generator, one_request(prompt[i:i + 1], NEGATIVE, s, guidance=1.0, scheduler="ddim"))[2][0]
                    for i, s in enumerate((4, 5))]


def test_per_item_negative_prompts_and_the_order_of_items(generator: GenStub) -> None:
    prompt = prompts(2, seed=1)
    negatives = prompts(2, seed=2)
    _, _, pngs, _ = run(generator, batch_request(prompt, negatives, (5, 6)))
    assert pngs[1] == run(generator, one_request(prompt[1:], negatives[1:], 6))[2][0]
    # Reversed, the same items come back reversed: an image belongs to its prompt and seed, not its place.
    _, _, reversed_pngs, _ = run(generator, batch_request(prompt[::-1].copy(), negatives[::-1].copy(), (6, 5)))
    assert reversed_pngs == pngs[::-1]


def test_a_batch_of_one_is_the_one_image_call(generator: GenStub) -> None:
    prompt = prompts(1, seed=3)
    _, _, batch, chunks = run(generator, batch_request(prompt, NEGATIVE, (42,)))
    assert batch == run(generator, one_request(prompt, NEGATIVE, 42))[2]
    assert {c.index for c in chunks} == {0}


def test_describe_publishes_max_batch_and_generate_enforces_it(generator: GenStub) -> None:
    info = generator.Describe(common_pb2.DescribeRequest(), timeout=10)
    assert info.max_batch == 8  # the setting's default; 2 x 8 tiny prompts are far under 4 MiB
    too_many = tuple(range(info.max_batch + 1))
    with pytest.raises(grpc.RpcError) as caught:
        list(generator.Generate(batch_request(prompts(len(too_many)), NEGATIVE, too_many), timeout=30))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert all(s in caught.value.details() for s in ("seeds", "max_batch", str(info.max_batch), str(len(too_many))))


BAD_BATCHES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "fewer_rows_than_seeds": ({"prompt": prompts(2), "seeds": (1, 2, 3)},
                              ["prompt_embeds.shape[0]", "expected 3", "got 2"]),
    "more_rows_than_seeds": ({"prompt": prompts(3), "seeds": (1, 2)},
                             ["prompt_embeds.shape[0]", "expected 2", "got 3"]),
    "negative_rows_neither_one_nor_b": ({"prompt": prompts(3), "negative": prompts(2), "seeds": (1, 2, 3)},
                                        ["negative_prompt_embeds", "(2, 77, 32)", "(3, 77, 32)", "(1, 77, 32)"]),
    "negative_of_another_length": ({"prompt": prompts(2), "negative": NEGATIVE[:, :70], "seeds": (1, 2)},
                                   ["negative_prompt_embeds", "(1, 70, 32)"]),
    "rows_without_seeds": ({"prompt": prompts(2), "seeds": ()}, ["prompt_embeds.shape[0]", "expected 1", "got 2"]),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_a_bad_batch_is_refused_naming_the_field_and_the_service_keeps_serving(generator: GenStub, case: str) -> None:
    fields, needles = BAD_BATCHES[case]
    request = batch_request(fields["prompt"], fields.get("negative", NEGATIVE), fields["seeds"])
    with pytest.raises(grpc.RpcError) as caught:
        list(generator.Generate(request, timeout=30))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    for needle in needles:
        assert needle in caught.value.details(), (needle, caught.value.details())
    assert len(run(generator, batch_request(prompts(2), NEGATIVE, (1, 2), steps=1))[2]) == 2


class HoldUNet:
    """Counts the served UNet's calls; holds call ``hold_at`` until released."""

    def __init__(self, service: RunningService, hold_at: int) -> None:
        assert isinstance(service.backend, StableDiffusionBackend)
        self.unet = service.backend.pipeline.unet
        self.count, self.hold_at = 0, hold_at
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, module: Any, args: Any) -> None:
        self.count += 1
        if self.count == self.hold_at:
            self.reached.set()
            self.release.wait(10)

    def __enter__(self) -> HoldUNet:
        self._handle = self.unet.register_forward_pre_hook(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def test_cancelling_a_batch_stops_it_within_one_step(generator: GenStub, generator_service: RunningService) -> None:
    with HoldUNet(generator_service, hold_at=3) as calls:
        call = generator.Generate(batch_request(prompts(3), NEGATIVE, (1, 2, 3), steps=20, scheduler="ddim"),
                                  timeout=60)
        for response in call:
            if response.progress.step == 2:
                break
        call.cancel()
        assert calls.reached.wait(10)
        time.sleep(0.3)  # the cancel reaches the server while UNet call 3 is held
        calls.release.set()
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
        assert caught.value.code() is grpc.StatusCode.CANCELLED
        _, steps, pngs, _ = run(generator, batch_request(prompts(2), NEGATIVE, (1, 2), steps=2, scheduler="ddim"))
        assert steps == [(1, 2), (2, 2)] and len(pngs) == 2
        # One UNet call for the whole batch per step: the cancelled run's 3 (the one in flight), the next run's 2.
        assert calls.count == 3 + 2


def test_max_batch_is_lowered_to_what_fits_the_message_limit(tiny_sd: dict[str, Any]) -> None:
    backend = StableDiffusionBackend(GeneratorConfig(device="cpu", **tiny_sd))
    backend.load()
    per_item = 2 * 77 * DIM * 4  # a prompt and a negative prompt, float32
    limit = 64 * 1024 + 3 * per_item + 100  # room for 3 items beside the request's margin
    servicer = GeneratorServicer(backend, Gate(1, 0), GeneratorConfig(device="cpu", max_message_bytes=limit, **tiny_sd))
    assert servicer.max_batch == 3
    small = GeneratorServicer(backend, Gate(1, 0), GeneratorConfig(device="cpu", max_batch=2, **tiny_sd))
    assert small.max_batch == 2
    # SD 1.5 (77 x 768) under gRPC's 4 MiB: 8 prompts and 8 negatives fit one request, 9 would not.
    assert batch_fits(4 << 20, 77, 768) == 8
    for count, fits in ((8, True), (9, False)):
        full = np.zeros((count, 77, 768), np.float32)
        request = generator_pb2.GenerateRequest(prompt_embeds=to_tensor(full), negative_prompt_embeds=to_tensor(full),
                                                seeds=range(count), steps=150, width=1024, height=1024, guidance=30)
        assert (request.ByteSize() <= 4 << 20) is fits


def test_the_one_by_one_default_paints_what_the_batched_backend_paints(tiny_sd: dict[str, Any]) -> None:
    # A backend that does not batch inherits GeneratorBackend.generate_batch: the items one after another.
    backend = StableDiffusionBackend(GeneratorConfig(device="cpu", precision="float32", **tiny_sd))
    backend.load()
    request = ImageRequest(prompt_embeds=prompts(2, seed=4), negative_prompt_embeds=NEGATIVE, seed=0, steps=2,
                           guidance=5.0, width=64, height=64, scheduler="ddim", seeds=(8, 9))
    one_by_one: list[tuple[int, int]] = []
    slow = GeneratorBackend.generate_batch(backend, request, lambda *s: one_by_one.append(s), lambda: False)
    batched: list[tuple[int, int]] = []
    fast = backend.generate_batch(request, lambda *s: batched.append(s), lambda: False)
    assert [np.asarray(i.image).tobytes() for i in slow] == [np.asarray(i.image).tobytes() for i in fast]
    assert one_by_one == [(1, 4), (2, 4), (3, 4), (4, 4)] and batched == [(1, 2), (2, 2)]
    with pytest.raises(InvalidInput, match="seeds: a batch has at most 1 items"):
        backend.generate(request, lambda *s: None, lambda: False)


def test_per_item_unet_paints_the_batch_alike_with_one_unet_call_per_item(tiny_sd: dict[str, Any]) -> None:
    # batch_unet=per_item (auto's choice off a float32 CPU): each item's rows through the UNet in turn.
    backend = StableDiffusionBackend(GeneratorConfig(device="cpu", precision="float32", batch_unet="per_item",
                                                     **tiny_sd))
    backend.load()
    request = ImageRequest(prompt_embeds=prompts(3, seed=6), negative_prompt_embeds=prompts(3, seed=7), seed=0,
                           steps=2, guidance=7.5, width=64, height=64, scheduler="euler_a", seeds=(1, 2, 3))
    assert backend.batch_unet(request) == "per_item"
    rows: list[int] = []
    handle = backend.pipeline.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        per_item = backend.generate_batch(request, lambda *s: None, lambda: False)
    finally:
        handle.remove()
    assert rows == [2] * 3 * 2  # (negative, positive) of one item per call; 3 items x 2 steps
    # no batched call, so no ItemwiseLinear: the UNet's Linears stay plain (torch.compile traces them)
    linears = {type(m).__name__ for m in backend.pipeline.unet.modules() if isinstance(m, torch.nn.Linear)}
    assert linears == {"Linear"}
    alone = [backend.generate(request.item(i), lambda *s: None, lambda: False) for i in range(3)]
    assert [np.asarray(i.image).tobytes() for i in per_item] == [np.asarray(i.image).tobytes() for i in alone]
