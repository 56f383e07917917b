"""The bad-input catalogue, part one: the table's shape and the model services' cases.

A ``Case`` is one named bad (or odd but valid) request sent over real gRPC to one service, with the
status the service deliberately answers and a substring of its message that names the field. The
orchestrator's cases (files and job options) are in ``catalogue_front.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from separator.streams import tone

from audiomemory.runtime.codec import to_tensor
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
)

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
Call = Callable[[grpc.Channel], list[Any]]


@dataclass(frozen=True)
class Case:
    """``call(channel)`` sends the request and reads the whole answer (raising ``grpc.RpcError`` on a
    status); ``code`` is the status expected, ``field`` a substring its message must hold; an OK case's
    ``check`` proves the answer is right."""

    name: str
    service: str
    call: Call
    code: grpc.StatusCode
    field: str = ""
    check: Callable[[list[Any]], bool] | None = None


def raw(dtype: int, shape: list[int], data: bytes, rate: int = 44100, channels: int = 2) -> tensor_pb2.AudioChunk:
    """An ``AudioChunk`` with exactly these tensor fields, consistent or not."""
    return tensor_pb2.AudioChunk(
        sample_rate=rate, channels=channels, samples=tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data)
    )


def audio(samples: np.ndarray, rate: int = 44100, channels: int | None = None) -> tensor_pb2.AudioChunk:
    return tensor_pb2.AudioChunk(
        sample_rate=rate, channels=samples.shape[0] if channels is None else channels, samples=to_tensor(samples)
    )


def with_value(samples: np.ndarray, value: float) -> np.ndarray:
    out = samples.copy()
    out[-1, out.shape[1] // 2] = value
    return out


F32 = tensor_pb2.DTYPE_FLOAT32
STEREO = tone(44100, 2, 0.1)
MONO = tone(48000, 1, 0.1)
SILENCE = np.zeros((2, 4410), np.float32)


# -- separator ---------------------------------------------------------------------------------------
def separate(*items: separator_pb2.SeparateOptions | tensor_pb2.AudioChunk | None) -> Call:
    """Separate with these requests in order (None: a request with neither options nor audio)."""
    requests = [
        separator_pb2.SeparateRequest() if item is None
        else separator_pb2.SeparateRequest(options=item) if isinstance(item, separator_pb2.SeparateOptions)
        else separator_pb2.SeparateRequest(audio=item)
        for item in items
    ]
    return lambda channel: list(separator_pb2_grpc.SeparatorStub(channel).Separate(iter(requests), timeout=60))


def output(
    rate: int = 0, channels: int = 0, dtype: int = 0, stems: tuple[str, ...] = ()
) -> separator_pb2.SeparateOptions:
    return separator_pb2.SeparateOptions(
        output=tensor_pb2.AudioFormat(sample_rate=rate, channels=channels, dtype=dtype), stems=stems
    )


def _separated(answer: list[Any]) -> bool:
    header = next(r.header for r in answer if r.WhichOneof("item") == "header")
    return header.frames == SILENCE.shape[1] and len(header.stems) == 4


SEPARATOR = [
    Case("separator/empty stream", "separator", separate(), INVALID, "audio"),
    Case("separator/zero frames", "separator", separate(audio(np.zeros((2, 0), np.float32))), INVALID, "audio"),
    Case("separator/NaN sample", "separator", separate(audio(with_value(STEREO, np.nan))), INVALID,
         "audio[0].samples"),
    Case("separator/+Inf sample", "separator", separate(audio(with_value(STEREO, np.inf))), INVALID,
         "audio[0].samples"),
    Case("separator/float16 -Inf in the second chunk", "separator",
         separate(audio(STEREO), audio(with_value(STEREO, -np.inf).astype(np.float16))), INVALID,
         "audio[1].samples"),
    Case("separator/int32 samples", "separator", separate(audio(np.zeros((2, 8), np.int32))), INVALID,
         "audio[0].samples.dtype"),
    Case("separator/dtype unspecified", "separator", separate(raw(0, [2, 4], bytes(32))), INVALID,
         "audio[0].samples.dtype"),
    Case("separator/dtype unknown wire value 99", "separator", separate(raw(99, [2, 4], bytes(32))), INVALID,
         "audio[0].samples.dtype"),
    Case("separator/rank-1 samples", "separator", separate(raw(F32, [8], bytes(32))), INVALID,
         "audio[0].samples.shape"),
    Case("separator/rank-3 samples", "separator", separate(raw(F32, [2, 2, 2], bytes(32))), INVALID,
         "audio[0].samples.shape"),
    Case("separator/negative dimension", "separator", separate(raw(F32, [2, -4], b"")), INVALID,
         "audio[0].samples.shape"),
    Case("separator/byte length not matching shape", "separator", separate(raw(F32, [2, 100], bytes(796))),
         INVALID, "audio[0].samples.data"),
    Case("separator/shape declares 10^12 frames", "separator", separate(raw(F32, [2, 10**12], bytes(8))),
         EXHAUSTED, "audio"),
    Case("separator/three channels", "separator", separate(audio(np.zeros((3, 100), np.float32))), INVALID,
         "audio[0].channels"),
    Case("separator/sample_rate 0", "separator", separate(audio(STEREO, rate=0)), INVALID, "audio[0].sample_rate"),
    Case("separator/sample_rate negative", "separator", separate(audio(STEREO, rate=-44100)), INVALID,
         "audio[0].sample_rate"),
    # 1 Hz: max_seconds (1200 s) is 1200 frames, so a song over the limit is a few bytes.
    Case("separator/song over max_seconds", "separator", separate(audio(np.zeros((1, 1201), np.float32), rate=1)),
         EXHAUSTED, "audio"),
    Case("separator/options sent twice", "separator", separate(output(), output(), audio(STEREO)), INVALID,
         "requests[1].options"),
    Case("separator/options after audio", "separator", separate(audio(STEREO), output()), INVALID,
         "requests[1].options"),
    Case("separator/request with neither options nor audio", "separator", separate(None), INVALID, "requests[0]"),
    Case("separator/unknown stem", "separator", separate(output(stems=("vocals", "kazoo")), audio(STEREO)),
         INVALID, "options.stems"),
    Case("separator/stem asked twice", "separator", separate(output(stems=("bass", "bass")), audio(STEREO)),
         INVALID, "options.stems"),
    Case("separator/output channels 5", "separator", separate(output(channels=5), audio(STEREO)), INVALID,
         "options.output.channels"),
    Case("separator/output sample_rate negative", "separator", separate(output(rate=-1), audio(STEREO)), INVALID,
         "options.output.sample_rate"),
    Case("separator/output dtype bfloat16", "separator",
         separate(output(dtype=tensor_pb2.DTYPE_BFLOAT16), audio(STEREO)), INVALID, "options.output.dtype"),
    Case("separator/silence is separated", "separator", separate(audio(SILENCE)), OK, check=_separated),
]


# -- audio encoder -----------------------------------------------------------------------------------
def embed(*requests: audio_encoder_pb2.EmbedRequest) -> Call:
    return lambda channel: list(audio_encoder_pb2_grpc.AudioEncoderStub(channel).Embed(iter(requests), timeout=60))


def signal(chunk: tensor_pb2.AudioChunk, index: int = 0) -> audio_encoder_pb2.EmbedRequest:
    return audio_encoder_pb2.EmbedRequest(audio=chunk, signal=index)


def signals(count: int, input_frames: int = 0) -> audio_encoder_pb2.EmbedRequest:
    return audio_encoder_pb2.EmbedRequest(options=audio_encoder_pb2.EmbedOptions(signals=count,
                                                                                 input_frames=input_frames))


def _embedded(answer: list[Any]) -> bool:
    ends = [r.end for r in answer if r.WhichOneof("item") == "end"]
    return len(ends) == 1 and list(ends[0].frames) == [1]


AUDIO_ENCODER = [
    Case("audio_encoder/signal index out of range", "audio_encoder",
         embed(signals(2), signal(audio(MONO, 48000)), signal(audio(MONO, 48000), 2)), INVALID,
         "requests[2].signal"),
    Case("audio_encoder/negative signal index", "audio_encoder", embed(signal(audio(MONO, 48000), -1)), INVALID,
         "requests[0].signal"),
    Case("audio_encoder/signals over max_signals", "audio_encoder", embed(signals(65)), EXHAUSTED,
         "options.signals"),
    Case("audio_encoder/input_frames negative", "audio_encoder", embed(signals(1, -5)), INVALID,
         "options.input_frames"),
    Case("audio_encoder/signal over max_seconds", "audio_encoder",
         embed(signal(audio(np.zeros((1, 1201), np.float32), rate=1))), EXHAUSTED, "requests[0].audio"),
    Case("audio_encoder/float64 samples", "audio_encoder", embed(signal(audio(MONO.astype(np.float64), 48000))),
         INVALID, "requests[0].audio.samples.dtype"),
    Case("audio_encoder/channels disagree with shape", "audio_encoder",
         embed(signal(audio(tone(48000, 2, 0.1), 48000, channels=1))), INVALID, "requests[0].audio.samples.shape"),
    Case("audio_encoder/AudioChunk with 3 channels", "audio_encoder",
         embed(signal(audio(np.zeros((3, 10), np.float32), 48000))), INVALID, "requests[0].audio.channels"),
    Case("audio_encoder/sample_rate over 384 kHz", "audio_encoder", embed(signal(audio(MONO, 400_000))), INVALID,
         "requests[0].audio.sample_rate"),
    Case("audio_encoder/float16 NaN", "audio_encoder",
         embed(signal(audio(with_value(MONO, np.nan).astype(np.float16), 48000))), INVALID,
         "requests[0].audio.samples"),
    Case("audio_encoder/bytes short of shape", "audio_encoder", embed(signal(raw(F32, [1, 10], bytes(39), 48000, 1))),
         INVALID, "requests[0].audio.samples.data"),
    Case("audio_encoder/options in a later request", "audio_encoder",
         embed(signal(audio(MONO, 48000)), signals(1)), INVALID, "requests[1].options"),
    Case("audio_encoder/a signal left without audio", "audio_encoder", embed(signals(2), signal(audio(MONO, 48000))),
         INVALID, "signal 1"),
    Case("audio_encoder/silence is embedded", "audio_encoder", embed(signal(audio(np.zeros((1, 4800), np.float32),
         48000))), OK, check=_embedded),
]


# -- text encoder ------------------------------------------------------------------------------------
def encode(*texts: str) -> Call:
    request = text_encoder_pb2.EncodeRequest(texts=texts)
    return lambda channel: list(text_encoder_pb2_grpc.TextEncoderStub(channel).Encode(request, timeout=60))


def _encoded(count: int) -> Callable[[list[Any]], bool]:
    def check(answer: list[Any]) -> bool:
        ids = next(r.header for r in answer if r.WhichOneof("item") == "header").token_ids
        return ids.shape[0] == count and answer[-1].embeddings.shape[0] == count

    return check


MAX_CHARS, MAX_TEXTS = 20_000, 16  # TextEncoderConfig's defaults, which the shared service runs with
ODD_TEXTS = {
    "right-to-left": "\u05e9\u05dc\u05d5\u05dd \u202ehello\u202c \u0645\u0631\u062d\u0628\u0627",
    "zero-width": "a\u200bb\u200c\u200d\ufeffc\u2060",
    "emoji": "\U0001f3b8\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8" * 20,
    "NUL": "before\x00after\x00",
    "combining marks": "e" + "\u0301" * 500,
}

TEXT_ENCODER = [
    Case("text_encoder/no texts", "text_encoder", encode(), INVALID, "texts"),
    Case("text_encoder/texts over max_texts", "text_encoder", encode(*["la"] * (MAX_TEXTS + 1)), EXHAUSTED, "texts"),
    Case("text_encoder/text over max_chars", "text_encoder", encode("x" * (MAX_CHARS + 1)), INVALID, "texts[0]"),
    Case("text_encoder/third text over max_chars", "text_encoder", encode("a", "b", "c" * (MAX_CHARS + 1)), INVALID,
         "texts[2]"),
    # Characters are code points: max_chars four-byte emoji pass, one more does not.
    Case("text_encoder/emoji over max_chars", "text_encoder", encode("\U0001f3b5" * (MAX_CHARS + 1)), INVALID,
         "texts[0]"),
    Case("text_encoder/emoji at max_chars", "text_encoder", encode("\U0001f3b5" * MAX_CHARS), OK, check=_encoded(1)),
    Case("text_encoder/empty string", "text_encoder", encode(""), OK, check=_encoded(1)),
    *(Case(f"text_encoder/odd unicode: {name}", "text_encoder", encode(text, text[::-1]), OK, check=_encoded(2))
      for name, text in ODD_TEXTS.items()),
]


# -- generator ---------------------------------------------------------------------------------------
Edit = Callable[[generator_pb2.GenerateRequest, int], None]


def generate(edit: Edit) -> Call:
    """Generate a 64x64 image in one step, with ``edit(request, D)`` applied (D: the model's
    cross-attention dim, read from Describe)."""

    def call(channel: grpc.Channel) -> list[Any]:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        dim = stub.Describe(common_pb2.DescribeRequest(), timeout=30).cross_attention_dim
        embeds = to_tensor(np.zeros((1, 77, dim), np.float32))
        request = generator_pb2.GenerateRequest(prompt_embeds=embeds, negative_prompt_embeds=embeds, steps=1,
                                                width=64, height=64)
        edit(request, dim)
        return list(stub.Generate(request, timeout=60))

    return call


def setting(**fields: Any) -> Edit:
    def edit(request: generator_pb2.GenerateRequest, dim: int) -> None:
        for name, value in fields.items():
            setattr(request, name, value)

    return edit


def prompt(shape: Callable[[int], list[int]], dtype: Any = np.float32, fill: float = 0.0,
           data: bytes | None = None, field: str = "prompt_embeds") -> Edit:
    """Replace one of the embeddings with a tensor of ``shape(D)`` (``data``: raw bytes, whatever the shape)."""
    def edit(request: generator_pb2.GenerateRequest, dim: int) -> None:
        dims = shape(dim)
        if data is not None:
            tensor = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=dims, data=data)
        else:
            tensor = to_tensor(np.full(dims, fill, dtype=dtype))
        getattr(request, field).CopyFrom(tensor)

    return edit


def batch(seeds: int, rows: int) -> Edit:
    """A batch of ``seeds`` seeds whose prompt has ``rows`` rows (the negative stays [1, 77, D], shared)."""
    def edit(request: generator_pb2.GenerateRequest, dim: int) -> None:
        request.seeds[:] = range(seeds)
        request.prompt_embeds.CopyFrom(to_tensor(np.zeros((rows, 77, dim), np.float32)))

    return edit


def _painted_two(answer: list[Any]) -> bool:
    images = [r.image for r in answer if r.WhichOneof("item") == "image"]
    return [i.index for i in images if i.last] == [0, 1]


def _missing_prompt(request: generator_pb2.GenerateRequest, dim: int) -> None:
    request.ClearField("prompt_embeds")


def _painted(answer: list[Any]) -> bool:
    images = [r.image for r in answer if r.WhichOneof("item") == "image"]
    return bool(images) and images[-1].last and (images[-1].width, images[-1].height) == (64, 64)


GENERATOR = [
    Case("generator/width negative", "generator", generate(setting(width=-64)), INVALID, "width"),
    Case("generator/height negative", "generator", generate(setting(height=-8)), INVALID, "height"),
    Case("generator/width not a multiple of 8", "generator", generate(setting(width=65)), INVALID, "width"),
    Case("generator/height over the limit", "generator", generate(setting(height=4096)), INVALID, "height"),
    Case("generator/steps negative", "generator", generate(setting(steps=-1)), INVALID, "steps"),
    Case("generator/steps over the limit", "generator", generate(setting(steps=151)), INVALID, "steps"),
    Case("generator/guidance NaN", "generator", generate(setting(guidance=float("nan"))), INVALID, "guidance"),
    Case("generator/guidance +Inf", "generator", generate(setting(guidance=float("inf"))), INVALID, "guidance"),
    Case("generator/guidance negative", "generator", generate(setting(guidance=-1.0)), INVALID, "guidance"),
    Case("generator/unknown scheduler", "generator", generate(setting(scheduler="warp-drive")), INVALID,
         "scheduler"),
    Case("generator/prompt_embeds missing", "generator", generate(_missing_prompt), INVALID, "prompt_embeds"),
    Case("generator/prompt_embeds rank 2", "generator", generate(prompt(lambda d: [77, d])), INVALID,
         "prompt_embeds.shape"),
    Case("generator/prompt_embeds batch of 2", "generator", generate(prompt(lambda d: [2, 77, d])), INVALID,
         "prompt_embeds.shape[0]"),
    Case("generator/prompt_embeds dim of another model", "generator", generate(prompt(lambda d: [1, 77, d + 1])),
         INVALID, "prompt_embeds"),
    Case("generator/prompt_embeds NaN", "generator", generate(prompt(lambda d: [1, 77, d], fill=np.nan)),
         INVALID, "prompt_embeds"),
    Case("generator/prompt_embeds int64", "generator", generate(prompt(lambda d: [1, 77, d], dtype=np.int64)),
         INVALID, "prompt_embeds.dtype"),
    Case("generator/prompt_embeds with no tokens", "generator", generate(prompt(lambda d: [1, 0, d])), INVALID,
         "prompt_embeds.shape[1]"),
    Case("generator/prompt_embeds declares a million tokens", "generator",
         generate(prompt(lambda d: [1, 10**6, d], data=b"")), EXHAUSTED, "prompt_embeds"),
    Case("generator/prompt_embeds bytes short of shape", "generator",
         generate(prompt(lambda d: [1, 77, d], data=bytes(12))), INVALID, "prompt_embeds.data"),
    Case("generator/negative_prompt_embeds of another length", "generator",
         generate(prompt(lambda d: [1, 76, d], field="negative_prompt_embeds")), INVALID, "negative_prompt_embeds"),
    Case("generator/negative_prompt_embeds +Inf", "generator",
         generate(prompt(lambda d: [1, 77, d], fill=np.inf, field="negative_prompt_embeds")), INVALID,
         "negative_prompt_embeds"),
    Case("generator/one step at the smallest size", "generator", generate(setting()), OK, check=_painted),
    Case("generator/seeds past max_batch", "generator", generate(batch(65, 65)), INVALID, "seeds"),
    Case("generator/seeds without a prompt row each", "generator", generate(batch(3, 1)), INVALID,
         "prompt_embeds.shape[0]"),
    Case("generator/a batch of two", "generator", generate(batch(2, 2)), OK, check=_painted_two),
]
