"""Hypothesis strategies for the fuzz tests: protos that are structurally valid but say anything.

Values are drawn from the edges each field has (0, negative, one past a limit, int32/int64 extremes)
and, as often, from consistent, well-formed values, so both the checks and what lies behind them run.
Sizes stay small: an example must cost milliseconds, whichever service it reaches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from audiomemory.runtime.codec import DTYPE_NAMES, iter_tensor_chunks, to_tensor
from audiomemory.v1 import orchestrator_pb2, separator_pb2, tensor_pb2

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
DTYPES = st.integers(-1, 10) | st.sampled_from([INT32[0], INT32[1], 99])
DIMS = st.integers(-2, 6) | st.sampled_from([2**31, 2**62, INT64[0], INT64[1]])
# Rates with a valid value keep a fuzzed song short (64 frames at 8 kHz and up): 1 Hz would be a minute.
RATES = st.sampled_from([0, -1, 8000, 22050, 44100, 48000, 384_000, 384_001, *INT32])
CHANNELS = st.sampled_from([-1, 0, 1, 2, 3, 5, *INT32])
SAMPLE_DTYPES = [np.float32, np.float16, np.float64, np.int32, np.uint8]


@st.composite
def raw_tensors(draw: st.DrawFn, max_rank: int = 6) -> tensor_pb2.Tensor:
    """Any dtype wire value, any shape (sometimes of absurd rank), any bytes."""
    rank = draw(st.integers(0, max_rank) | st.just(65))
    shape = draw(st.lists(DIMS, min_size=rank, max_size=rank))
    return tensor_pb2.Tensor(dtype=draw(DTYPES), shape=shape, data=draw(st.binary(max_size=96)))


@st.composite
def arrays(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A numpy array of a dtype the wire carries (floats with NaN and Inf among their values)."""
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8, np.bool_]))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


def tensors() -> st.SearchStrategy[tensor_pb2.Tensor]:
    """Half raw, half the encoding of a real array."""
    return raw_tensors() | arrays().map(to_tensor)


def expected_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of ``from_tensor``/``TensorAssembler``: an expected shape, dtypes, finiteness, a cap."""
    return st.fixed_dictionaries({}, optional={
        "shape": st.lists(st.none() | st.integers(0, 5), max_size=4),
        "dtypes": st.sets(st.sampled_from(DTYPE_NAMES), min_size=1),
        "finite": st.booleans(),
        "max_bytes": st.integers(0, 1024),
    })


@st.composite
def chunk_streams(draw: st.DrawFn) -> list[tensor_pb2.TensorChunk]:
    """The pieces of a real array, then maybe shuffled, dropped, repeated, shifted or swapped for raw ones."""
    chunks = list(iter_tensor_chunks(draw(arrays()), chunk_bytes=draw(st.integers(1, 16))))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(chunks) - 1))
        how = draw(st.sampled_from(["swap", "drop", "repeat", "offset", "raw", "reshape"]))
        if how == "swap" and len(chunks) > 1:
            j = draw(st.integers(0, len(chunks) - 1))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif how == "drop":
            del chunks[i]
        elif how == "repeat":
            chunks.insert(i, chunks[i])
        elif how in ("offset", "reshape", "raw"):
            changed = tensor_pb2.TensorChunk()
            changed.CopyFrom(chunks[i])
            if how == "offset":
                changed.offset = draw(st.integers(*INT64))
            elif how == "reshape":
                changed.shape[:] = draw(st.lists(DIMS, max_size=4))
            else:
                changed.dtype, changed.data = draw(DTYPES), draw(st.binary(max_size=32))
            chunks[i] = changed
        if not chunks:
            break
    return chunks


@st.composite
def audio_chunks(draw: st.DrawFn, rate: int | None = None) -> tensor_pb2.AudioChunk:
    """An ``AudioChunk``: half with samples matching a plausible declared layout, half with any tensor."""
    channels = draw(CHANNELS)
    if draw(st.booleans()):
        rows = channels if channels in (1, 2) else draw(st.integers(1, 3))
        samples = to_tensor(draw(hnp.arrays(draw(st.sampled_from(SAMPLE_DTYPES)), (rows, draw(st.integers(0, 64))))))
    else:
        samples = draw(raw_tensors(max_rank=3))
    return tensor_pb2.AudioChunk(sample_rate=draw(RATES) if rate is None else rate, channels=channels,
                                 samples=samples)


@st.composite
def good_audio(draw: st.DrawFn, rate: int, channels: int) -> tensor_pb2.AudioChunk:
    """Finite float32 audio of this layout, up to 64 frames."""
    frames = draw(st.integers(0, 64))
    elements = st.floats(-1, 1, width=32)
    return tensor_pb2.AudioChunk(sample_rate=rate, channels=channels,
                                 samples=to_tensor(draw(hnp.arrays(np.float32, (channels, frames), elements=elements))))


def audio_streams(rate: int) -> st.SearchStrategy[list[tensor_pb2.AudioChunk]]:
    """A few chunks, usually of one good format so the stream reaches the model; sometimes anything."""
    same = st.sampled_from([1, 2]).flatmap(lambda ch: st.lists(good_audio(rate, ch), min_size=1, max_size=3))
    return same | st.lists(audio_chunks() | good_audio(rate, 1), max_size=3)


STEM_NAMES = st.sampled_from(["drums", "bass", "other", "vocals", "", "kazoo", "DRUMS", "vocals\x00"])


def separate_options() -> st.SearchStrategy[separator_pb2.SeparateOptions]:
    return st.builds(
        separator_pb2.SeparateOptions,
        output=st.builds(tensor_pb2.AudioFormat, sample_rate=st.sampled_from([0, -5, 8000, 44100, 384_001]),
                         channels=CHANNELS, dtype=st.sampled_from([0, 1, 2, 3, 6, 99])),
        stems=st.lists(STEM_NAMES, max_size=5),
    )


def one_broken(valid: dict[str, st.SearchStrategy[Any]], invalid: dict[str, st.SearchStrategy[Any]]
               ) -> st.SearchStrategy[dict[str, Any]]:
    """Every field of ``valid`` drawn valid but at most one, named in ``invalid`` and drawn from there: a
    request of many fields reaches the model about one time in two, and each check is met alone."""
    names = sorted(invalid)

    @st.composite
    def draw_fields(draw: st.DrawFn) -> dict[str, Any]:
        broken = draw(st.sampled_from(names)) if draw(st.booleans()) else None
        return {name: draw(invalid[name] if name == broken else strategy) for name, strategy in valid.items()}

    return draw_fields()


def values(*items: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(items)


NOT_FINITE = (float("nan"), float("inf"), -float("inf"))
TEXT = st.text(max_size=30)


# -- orchestrator options; 0 sizes and steps (the generator's default: 512 px, 20 steps) left out -------
def image_options() -> st.SearchStrategy[orchestrator_pb2.CreateImageOptions]:
    valid = {
        "lyrics": TEXT, "lyrics_window": values("", "salient", "head"), "negative_prompt": TEXT,
        "seed": st.integers(0, 2**64 - 1), "steps": values(1, 2), "width": values(64, 72), "height": values(64),
        "scheduler": values(""), "keep_bos": st.booleans(), "filename": TEXT,
        "strength": st.none() | st.floats(0, 1), "guidance": st.none() | values(0.0, 1.0, 7.5),
        "projection_seed": st.none() | st.integers(0, 2**64 - 1),
    }
    invalid = {
        "lyrics": st.just("\U0001f3b5" * 100_001), "lyrics_window": values("chorus", "HEAD"),
        "negative_prompt": st.just("n" * 10_001), "steps": values(-1, 151, *INT32), "width": values(-64, 65, 4096),
        "height": values(-8, 100, 2048), "scheduler": values("warp"), "filename": st.just("a" * 513),
        "strength": values(-0.1, 1.5, *NOT_FINITE), "guidance": values(-1.0, 31.0, *NOT_FINITE),
    }
    return one_broken(valid, invalid).map(
        lambda fields: orchestrator_pb2.CreateImageOptions(**{k: v for k, v in fields.items() if v is not None})
    )


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` with bytes flipped, cut, spliced in or repeated (a few edits, anywhere)."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            how = draw(st.sampled_from(["flip", "truncate", "splice", "repeat", "zero"]))
            if how == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif how == "truncate":
                del data[at:]
            elif how == "splice":
                data[at:at] = draw(st.binary(min_size=1, max_size=64))
            elif how == "repeat":
                data[at:at] = data[at : at + draw(st.integers(1, 512))]
            else:
                data[at : at + draw(st.integers(1, 64))] = bytes(64)
        return bytes(data)

    return mutate()


MAGIC = st.sampled_from([b"", b"RIFF\xff\xff\xff\x7fWAVEfmt ", b"fLaC", b"ID3\x04\x00", b"OggS\x00\x02",
                         b"\xff\xfb\x90\x00", b"\x00\x00\x00\x20ftypM4A "])
RANDOM_FILES = st.tuples(MAGIC, st.binary(max_size=2048)).map(lambda parts: parts[0] + parts[1])
