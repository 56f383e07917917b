"""The Generator service over real gRPC with tiny models: fidelity, determinism, cancellation, bad input."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.runtime.codec import assemble_tensor, to_tensor
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import (
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    tensor_pb2,
    text_encoder_pb2,
    text_encoder_pb2_grpc,
)

GenStub = generator_pb2_grpc.GeneratorStub
TextStub = text_encoder_pb2_grpc.TextEncoderStub

LYRICS = "hold the light, we were young under neon rain, hold the light"
SEED = 1234


def encode(text_encoder: TextStub, texts: list[str]) -> np.ndarray:
    responses = list(text_encoder.Encode(text_encoder_pb2.EncodeRequest(texts=texts), timeout=30))
    assert [r.WhichOneof("item") for r in responses[:2]] == ["served", "header"]
    return assemble_tensor((r.embeddings for r in responses[2:]), "embeddings", max_bytes=1 << 26)


@pytest.fixture(scope="module")
def lyric_embeds(text_encoder_service: RunningService) -> tuple[np.ndarray, np.ndarray]:
    """The lyrics and the empty negative prompt, encoded in ONE batched call as the orchestrator does."""
    with grpc.insecure_channel(text_encoder_service.address) as channel:
        both = encode(text_encoder_pb2_grpc.TextEncoderStub(channel), [LYRICS, ""])
    return both[:1], both[1:]


def make_request(
    embeds: tuple[np.ndarray, np.ndarray], *, guidance: float | None = 7.5, **fields: Any
) -> generator_pb2.GenerateRequest:
    fields = {"seed": SEED, "steps": 2, "width": 64, "height": 64, **fields}
    if guidance is not None:
        fields.update(guidance=guidance)
    return generator_pb2.GenerateRequest(
        prompt_embeds=to_tensor(embeds[0]), negative_prompt_embeds=to_tensor(embeds[1]), **fields
    )


def generate(
    stub: GenStub, request: generator_pb2.GenerateRequest
) -> tuple[list[tuple[int, int]], bytes, list[generator_pb2.ImageChunk]]:
    """Run one call; return its (step, total) events, the PNG bytes and the image chunks."""
    steps: list[tuple[int, int]] = []
    chunks: list[generator_pb2.ImageChunk] = []
    for response in stub.Generate(request, timeout=60):
        if response.WhichOneof("item") == "served":
            assert not steps and not chunks, "the Served header after the work started"
            continue
        if response.WhichOneof("item") == "queued":
            assert not steps and not chunks, "a place in line after the work started"
            continue
        if response.WhichOneof("item") == "progress":
            assert not chunks, "progress after the image started"
            steps.append((response.progress.step, response.progress.total))
        else:
            chunks.append(response.image)
    assert chunks and chunks[-1].last and not any(c.last for c in chunks[:-1])
    return steps, b"".join(c.png for c in chunks), chunks


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_describe_gives_the_models_facts(generator: GenStub, tiny_sd: dict[str, Any],
                                        generator_service: RunningService) -> None:
    info = generator.Describe(common_pb2.DescribeRequest(), timeout=10)
    assert (info.cross_attention_dim, info.max_length, info.native_size) == (32, 77, 64)
    assert {"dpm++2m", "euler", "euler_a", "ddim", "pndm"} <= set(info.schedulers)
    assert info.schedulers[0] == "pndm"  # the model's own scheduler (SD 1.5's PNDM) is the default
    assert info.model.service == "generator" and info.model.backend == generator_service.config.backend
    assert info.model.model_id == Path(tiny_sd["model"]).name and info.model.revision.startswith("sha256:")
    assert (info.model.device, info.model.dtype) == ("cpu", "float32")
    assert (info.model.extra["precision"], info.model.extra["vae_dtype"]) == ("float32", "float32")
    assert info.model.extra["safety_checker"] == "off"


def test_text_encoder_and_generator_fit_together(generator: GenStub, text_encoder: TextStub) -> None:
    text_info = text_encoder.Describe(common_pb2.DescribeRequest(), timeout=10)
    assert text_info.hidden_size == generator.Describe(common_pb2.DescribeRequest(), timeout=10).cross_attention_dim


@pytest.fixture(scope="module")
def direct_pipeline(tiny_sd: dict[str, Any], tiny_clip: dict[str, Any]) -> Any:
    """The plain diffusers pipeline on the same tiny weights, WITH its text encoder and tokenizer."""
    from diffusers import StableDiffusionPipeline
    from transformers import AutoTokenizer, CLIPTextModel

    clip = Path(tiny_clip["model"])
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd["model"],
        text_encoder=CLIPTextModel.from_pretrained(str(clip / "text_encoder"), local_files_only=True),
        tokenizer=AutoTokenizer.from_pretrained(str(clip / "tokenizer"), local_files_only=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("scheduler", "diffusers_class"),
    [("", None), ("euler_a", "EulerAncestralDiscreteScheduler"), ("dpm++2m", "DPMSolverMultistepScheduler")],
)
def test_lyrics_through_both_services_match_diffusers_called_with_the_text(
    generator: GenStub,
    lyric_embeds: tuple[np.ndarray, np.ndarray],
    direct_pipeline: Any,
    scheduler: str,
    diffusers_class: str | None,
) -> None:
    import diffusers

    _, png, chunks = generate(generator, make_request(lyric_embeds, steps=3, scheduler=scheduler))
    served = pixels(png)

    pipe = direct_pipeline
    original = pipe.scheduler
    if diffusers_class is not None:
        pipe.scheduler = getattr(diffusers, diffusers_class).from_config(original.config)
    try:
        direct = pipe(
            LYRICS,
            num_inference_steps=3,
            guidance_scale=7.5,
            width=64,
            height=64,
            generator=torch.Generator("cpu").manual_seed(SEED),
        ).images[0]
    finally:
        pipe.scheduler = original
    expected = np.asarray(direct.convert("RGB"))
    assert served.shape == expected.shape == (64, 64, 3)
    # Why a difference could remain at all: the text encoder service encodes lyrics and negative
    # prompt in ONE batch of two, diffusers encodes them one at a time; batched matmuls may round
    # the last float bit differently, which can flip a pixel's 8-bit rounding by one step. On this
    # CPU the two agree exactly, but 1/255 is the contract.
    assert int(np.abs(served.astype(int) - expected.astype(int)).max()) <= 1
    assert served.std() > 1.0  # a real picture (noise from random weights), not a flat fill
    assert chunks[-1].scheduler == (scheduler or "pndm")


def test_same_seed_gives_identical_png_and_another_seed_differs(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    _, first, _ = generate(generator, make_request(lyric_embeds, seed=7))
    _, again, _ = generate(generator, make_request(lyric_embeds, seed=7))
    _, other, _ = generate(generator, make_request(lyric_embeds, seed=8))
    assert first == again
    assert np.abs(pixels(first).astype(int) - pixels(other).astype(int)).max() > 10


def test_the_whole_uint64_seed_range_is_usable(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    _, top, _ = generate(generator, make_request(lyric_embeds, seed=2**64 - 1))
    _, zero, _ = generate(generator, make_request(lyric_embeds, seed=0))
    assert top != zero


def test_one_progress_event_per_step_then_the_png(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    steps, png, chunks = generate(generator, make_request(lyric_embeds, steps=3, scheduler="ddim", height=96))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert (chunks[-1].width, chunks[-1].height, chunks[-1].scheduler) == (64, 96, "ddim")
    assert Image.open(io.BytesIO(png)).size == (64, 96)


def test_pndm_reports_its_extra_warmup_call_as_a_step(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    # PNDM (skip_prk_steps) runs the UNet steps + 1 times; progress counts UNet calls honestly.
    steps, _, _ = generate(generator, make_request(lyric_embeds, steps=3, scheduler="pndm"))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler_a", "dpm++2m", "dpm++2m_karras", "pndm"])
def test_every_listed_scheduler_paints(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray], scheduler: str
) -> None:
    _, png, chunks = generate(generator, make_request(lyric_embeds, scheduler=scheduler))
    assert chunks[-1].scheduler == scheduler and pixels(png).std() > 1.0


def test_unset_fields_take_the_configured_defaults(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    # width/height 0 → default_size (64 for the tiny profile); guidance unset → 7.5; steps 2 here.
    request = make_request(lyric_embeds, width=0, height=0, guidance=None)
    _, png, chunks = generate(generator, request)
    _, explicit, _ = generate(generator, make_request(lyric_embeds, guidance=7.5))
    assert (chunks[-1].width, chunks[-1].height) == (64, 64)
    assert png == explicit
    _, no_guidance, _ = generate(generator, make_request(lyric_embeds, guidance=0.0))
    assert no_guidance != explicit  # guidance 0 sent is honoured, not taken for "unset"


def first_progress(stub: GenStub, request: generator_pb2.GenerateRequest) -> generator_pb2.StepProgress:
    """The call's first progress event (so the request was accepted), then cancel the rest of the run."""
    call = stub.Generate(request, timeout=60)
    try:
        assert next(call).WhichOneof("item") == "served"
        response = next(call)
        while response.WhichOneof("item") == "queued":  # behind a call that is still letting go of the slot
            response = next(call)
    finally:
        call.cancel()
    assert response.WhichOneof("item") == "progress"
    return response.progress


def test_describe_publishes_the_request_limits_that_generate_enforces(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    info = generator.Describe(common_pb2.DescribeRequest(), timeout=10)
    assert (info.min_steps, info.max_steps, info.default_steps) == (1, 150, 20)
    assert (info.min_guidance, info.max_guidance, info.default_guidance) == (0.0, 30.0, 7.5)
    assert (info.min_size, info.max_size, info.size_multiple) == (64, 1024, 8)
    assert info.default_size == 64  # the tiny profile's; the service default is 512

    # Just outside each published bound: refused, naming the field and the bounds Describe gave.
    steps_range = f"{info.min_steps}..{info.max_steps}"
    guidance_range = f"{info.min_guidance:g}..{info.max_guidance:g}"
    sizes = f"multiple of {info.size_multiple} in {info.min_size}..{info.max_size}"
    refused: list[tuple[dict[str, Any], list[str]]] = [
        ({"steps": info.max_steps + 1}, ["steps", steps_range, str(info.max_steps + 1)]),
        ({"guidance": info.max_guidance + 0.5}, ["guidance", guidance_range]),
        ({"guidance": info.min_guidance - 0.5}, ["guidance", guidance_range]),
        ({"width": info.max_size + info.size_multiple}, ["width", sizes]),
        ({"width": info.min_size - info.size_multiple}, ["width", sizes]),
        ({"height": info.min_size + info.size_multiple // 2}, ["height", sizes]),
    ]
    # A compiled generator publishes the only sizes it paints (the default first); another in bounds is refused.
    listed = [(size.width, size.height) for size in info.sizes]
    odd = info.min_size + info.size_multiple
    if listed:
        assert listed[0] == (info.default_size, info.default_size) and (odd, odd) not in listed
        refused.append(({"width": odd, "height": odd},
                        ["width x height", ", ".join(f"{w}x{h}" for w, h in listed), f"{odd}x{odd}"]))
    else:
        _, _, chunks = generate(generator, make_request(lyric_embeds, steps=1, width=odd, height=odd))
        assert (chunks[-1].width, chunks[-1].height) == (odd, odd)
    for fields, needles in refused:
        with pytest.raises(grpc.RpcError) as caught:
            list(generator.Generate(make_request(lyric_embeds, **fields), timeout=30))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (fields, caught.value.details())
        for needle in needles:
            assert needle in caught.value.details(), (fields, needle, caught.value.details())

    # On each bound: accepted (ddim: progress totals are the steps asked for).
    assert first_progress(generator, make_request(lyric_embeds, steps=info.max_steps, scheduler="ddim")).total == (
        info.max_steps
    )
    steps, _, chunks = generate(
        generator,
        make_request(
            lyric_embeds, steps=info.min_steps, guidance=info.max_guidance, width=info.min_size, height=info.min_size,
            scheduler="ddim",
        ),
    )
    assert steps == [(1, info.min_steps)] and (chunks[-1].width, chunks[-1].height) == (info.min_size,) * 2
    _, png, _ = generate(generator, make_request(lyric_embeds, steps=1, guidance=info.min_guidance))
    assert pixels(png).shape == (info.min_size, info.min_size, 3)

    # Left out: the published defaults are what runs.
    assert first_progress(generator, make_request(lyric_embeds, steps=0, scheduler="ddim")).total == info.default_steps
    _, _, chunks = generate(generator, make_request(lyric_embeds, steps=1, width=0, height=0))
    assert (chunks[-1].width, chunks[-1].height) == (info.default_size, info.default_size)


class UNetCalls:
    """Counts the UNet calls of the served pipeline (whatever runs them: the torch UNet, a compiled one); can hold
    call ``hold_at`` until released."""

    def __init__(self, service: RunningService, hold_at: int = 0, delay: float = 0.0) -> None:
        backend = service.backend
        assert isinstance(backend, StableDiffusionBackend)
        self.backend = backend
        self.count = 0
        self.hold_at = hold_at
        self.delay = delay
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        if self.count == self.hold_at:
            self.reached.set()
            self.release.wait(10)
        if self.delay:
            time.sleep(self.delay)
        return self.unet(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # config, dtype, …: the UNet's
        return getattr(self.__dict__["unet"], name)

    def __enter__(self) -> UNetCalls:
        self.unet = self.backend.denoiser()
        self.backend.denoiser = lambda: self  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.backend.denoiser  # the class's method again


def test_cancel_mid_run_stops_within_one_step_and_the_next_request_succeeds(
    generator: GenStub, generator_service: RunningService, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    cancel_after = 2
    # Hold the UNet call right after step 2 until the client has cancelled and the cancellation
    # has had ample time to reach the server, so the count below is exact, not a race.
    with UNetCalls(generator_service, hold_at=cancel_after + 1) as calls:
        call = generator.Generate(make_request(lyric_embeds, steps=20, scheduler="ddim"), timeout=60)
        for response in call:
            if response.progress.step == cancel_after:
                break
        call.cancel()
        assert calls.reached.wait(10)
        time.sleep(0.3)
        calls.release.set()
        with pytest.raises(grpc.RpcError) as caught:
            next(call)
        assert caught.value.code() is grpc.StatusCode.CANCELLED

        # The gate has one model slot: this request runs only once the cancelled one let go of it.
        start = time.monotonic()
        steps, png, _ = generate(generator, make_request(lyric_embeds, steps=2, scheduler="ddim"))
        assert steps == [(1, 2), (2, 2)] and pixels(png).shape == (64, 64, 3)
        assert time.monotonic() - start < 20
        # The cancelled run made exactly one UNet call after the cancel landed (the step in flight),
        # and none of its remaining 17; the next run made its own 2.
        assert calls.count == cancel_after + 1 + 2


def test_deadline_stops_generation_and_frees_the_worker(
    generator: GenStub, generator_service: RunningService, lyric_embeds: tuple[np.ndarray, np.ndarray]
) -> None:
    delay, deadline = 0.1, 0.6
    with UNetCalls(generator_service, delay=delay) as calls:
        with pytest.raises(grpc.RpcError) as caught:
            list(generator.Generate(make_request(lyric_embeds, steps=50, scheduler="ddim"), timeout=deadline))
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        steps, _, _ = generate(generator, make_request(lyric_embeds, steps=2, scheduler="ddim"))
        assert len(steps) == 2
    stopped_run = calls.count - 2
    # ~6 calls fit in the deadline; one more may be in flight when it passes. Never all 50.
    assert 1 <= stopped_run <= deadline / delay + 2


def shaped(shape: tuple[int, ...], fill: float = 0.1, dtype: Any = np.float32) -> tensor_pb2.Tensor:
    return to_tensor(np.full(shape, fill, dtype=dtype))


def _bad(**fields: Any) -> dict[str, Any]:
    return fields


GOOD = (1, 77, 32)
NAN = np.full(GOOD, 0.1, dtype=np.float32)
NAN[0, 5, 3] = np.nan
INF = np.full(GOOD, 0.1, dtype=np.float32)
INF[0, 0, 0] = np.inf

BAD_INPUTS = {
    "dim_mismatch": (
        _bad(prompt_embeds=shaped((1, 77, 768)), negative_prompt_embeds=shaped((1, 77, 768))),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["768", "32", "cross-attention"],
    ),
    "negative_shape_differs": (
        _bad(negative_prompt_embeds=shaped((1, 76, 32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["negative_prompt_embeds", "(1, 76, 32)", "(1, 77, 32)"],
    ),
    "nan_in_prompt": (
        _bad(prompt_embeds=to_tensor(NAN)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["prompt_embeds", "finite"],
    ),
    "inf_in_negative": (
        _bad(negative_prompt_embeds=to_tensor(INF)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["negative_prompt_embeds", "finite"],
    ),
    "missing_prompt": (
        _bad(prompt_embeds=generator_pb2.GenerateRequest().prompt_embeds),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["prompt_embeds", "required"],
    ),
    "int_dtype": (
        _bad(prompt_embeds=shaped(GOOD, 1, np.int64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["prompt_embeds.dtype", "float16", "int64"],
    ),
    "batch_of_two": (
        _bad(prompt_embeds=shaped((2, 77, 32)), negative_prompt_embeds=shaped((2, 77, 32))),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["prompt_embeds.shape[0]", "expected 1"],
    ),
    "rank_two": (_bad(prompt_embeds=shaped((77, 32))), grpc.StatusCode.INVALID_ARGUMENT, ["rank 3"]),
    "short_data": (
        _bad(prompt_embeds=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1, 77, 32], data=b"\0" * 100)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["prompt_embeds.data", "100 bytes"],
    ),
    "too_many_tokens": (
        _bad(prompt_embeds=shaped((1, 5000, 32)), negative_prompt_embeds=shaped((1, 5000, 32))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ["prompt_embeds", "limit"],
    ),
    "steps_too_many": (_bad(steps=151), grpc.StatusCode.INVALID_ARGUMENT, ["steps", "1..150", "151"]),
    "steps_negative": (_bad(steps=-3), grpc.StatusCode.INVALID_ARGUMENT, ["steps", "-3"]),
    "guidance_nan": (
        _bad(guidance=float("nan")),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["guidance", "finite"],
    ),
    "guidance_too_high": (_bad(guidance=30.5), grpc.StatusCode.INVALID_ARGUMENT, ["0..30"]),
    "guidance_negative": (_bad(guidance=-1.0), grpc.StatusCode.INVALID_ARGUMENT, ["guidance"]),
    "width_not_multiple_of_8": (_bad(width=68), grpc.StatusCode.INVALID_ARGUMENT, ["width", "multiple of 8", "68"]),
    "width_too_big": (_bad(width=1032), grpc.StatusCode.INVALID_ARGUMENT, ["width", "64..1024", "1032"]),
    "height_too_small": (_bad(height=56), grpc.StatusCode.INVALID_ARGUMENT, ["height", "56"]),
    "unknown_scheduler": (
        _bad(scheduler="k_lms_turbo"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["scheduler", "k_lms_turbo", "dpm++2m"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_status_and_a_clear_message_and_the_server_keeps_serving(
    generator: GenStub, lyric_embeds: tuple[np.ndarray, np.ndarray], case: str
) -> None:
    fields, code, needles = BAD_INPUTS[case]
    request = make_request(lyric_embeds)
    for name, value in fields.items():
        if isinstance(value, tensor_pb2.Tensor):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as caught:
        list(generator.Generate(request, timeout=30))
    assert caught.value.code() is code, caught.value.details()
    for needle in needles:
        assert needle in caught.value.details(), (needle, caught.value.details())
    _, png, _ = generate(generator, make_request(lyric_embeds, steps=1))
    assert pixels(png).shape == (64, 64, 3)


def test_large_png_travels_in_chunks_under_one_mebibyte() -> None:
    from audiomemory.generator.backends import GeneratedImage
    from audiomemory.generator.servicer import _image_chunks

    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    responses = list(_image_chunks(GeneratedImage(image=image, scheduler="ddim", steps_run=1, total_steps=1)))
    pieces = [r.image.png for r in responses]
    assert len(pieces) > 2 and all(len(p) < (1 << 20) for p in pieces)
    assert [r.image.last for r in responses] == [False] * (len(pieces) - 1) + [True]
    np.testing.assert_array_equal(pixels(b"".join(pieces)), noise)
