"""The tensor codec: lossless round trips, zero-copy decode, and every malformed input refused clearly."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from audiomemory.runtime import audio, codec
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.v1 import tensor_pb2

NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(NUMPY_DTYPES)), shape=shapes)
def test_numpy_round_trip_is_lossless_for_every_dtype_and_shape(data: st.DataObject, name: str, shape: tuple) -> None:
    arr = data.draw(hnp.arrays(NUMPY_DTYPES[name], shape))
    msg = codec.to_tensor(arr)
    assert tuple(msg.shape) == arr.shape
    out = codec.from_tensor(tensor_pb2.Tensor.FromString(msg.SerializeToString()), field="t")
    assert _same(out, arr.copy(order="C"))


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)),
       step=st.integers(2, 3))
def test_non_contiguous_inputs_encode_as_their_logical_values(arr: np.ndarray, step: int) -> None:
    view = arr[..., ::step].swapaxes(0, -1)  # strided and transposed
    out = codec.from_tensor(codec.to_tensor(view), field="t")
    assert _same(out, np.ascontiguousarray(view))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.int32, torch.uint8, torch.bool])
def test_torch_round_trip_keeps_dtype_and_values(dtype: torch.dtype) -> None:
    x = (torch.randn(3, 0 if dtype == torch.int32 else 4, 5) * 10).to(dtype)
    x = x.transpose(0, 2)  # non-contiguous
    y = codec.numpy_to_torch(codec.from_tensor(codec.to_tensor(x), field="t"))
    assert y.dtype == dtype and y.shape == x.shape and torch.equal(y, x)


def test_bfloat16_numpy_round_trip_uses_ml_dtypes() -> None:
    arr = np.array([[1.5, -2.0], [np.inf, 0.0]], dtype=ml_dtypes.bfloat16)
    out = codec.from_tensor(codec.to_tensor(arr), field="t")
    assert _same(out, arr)
    with pytest.raises(InvalidInput, match="finite"):
        codec.from_tensor(codec.to_tensor(arr), field="t", finite=True)


def test_decode_is_zero_copy_and_read_only() -> None:
    msg = codec.to_tensor(np.arange(1024, dtype=np.float32))
    out = codec.from_tensor(msg, field="t")
    assert not out.flags.writeable and not out.flags.owndata


def test_big_endian_input_travels_as_little_endian() -> None:
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    msg = codec.to_tensor(arr)
    assert msg.data == np.arange(6, dtype="<i4").tobytes()
    assert (codec.from_tensor(msg, field="t") == arr).all()


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=40)),
       chunk_bytes=st.integers(1, 700))
def test_chunked_round_trip_reassembles_any_split(arr: np.ndarray, chunk_bytes: int) -> None:
    chunks = list(codec.iter_tensor_chunks(arr, chunk_bytes=chunk_bytes))
    assert all(len(c.data) <= chunk_bytes for c in chunks)
    out = codec.assemble_tensor(iter(chunks), "t", max_bytes=1 << 20)
    assert _same(out, arr)


def test_audio_chunks_round_trip_in_float16_within_half_precision() -> None:
    rng = np.random.default_rng(0)
    signal = rng.uniform(-1, 1, (2, 10_000)).astype(np.float32)
    chunks = list(audio.iter_audio_chunks(signal, 22050, dtype="float16", chunk_bytes=4096))
    assert len(chunks) > 1 and all(len(c.samples.data) <= 4096 for c in chunks)
    asm = audio.AudioAssembler("audio", max_frames=10_000, max_bytes=1 << 20)
    for c in chunks:
        asm.add(c)
    out, rate = asm.result()
    assert rate == 22050 and out.dtype == np.float32 and out.shape == signal.shape
    assert np.abs(out - signal).max() < 1e-3


def _tensor(
    dtype: int = tensor_pb2.DTYPE_FLOAT32, shape: tuple = (2, 3), data: bytes | None = None
) -> tensor_pb2.Tensor:
    n = int(np.prod(shape)) if all(d >= 0 for d in shape) else 0
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=bytes(4 * n) if data is None else data)


MALFORMED_TENSORS = [
    ("wrong byte count", _tensor(data=bytes(23)), {}, "expected 24 bytes"),
    ("negative dim", _tensor(shape=(2, -3), data=b""), {}, ">= 0"),
    ("unknown dtype", _tensor(dtype=42), {}, "wire value 42"),
    ("unspecified dtype", _tensor(dtype=tensor_pb2.DTYPE_UNSPECIFIED), {}, "dtype"),
    ("rank mismatch", _tensor(), {"shape": (None,)}, "expected rank 1"),
    ("dim mismatch", _tensor(), {"shape": (2, 4)}, "shape[1]: expected 4, got 3"),
    ("dtype not accepted", _tensor(), {"dtypes": ("float16",)}, "expected float16, got float32"),
    ("NaN where forbidden", codec.to_tensor(np.array([1.0, np.nan], np.float32)), {"finite": True}, "finite"),
    ("inf where forbidden", codec.to_tensor(np.array([np.inf], np.float16)), {"finite": True}, "finite"),
]


@pytest.mark.parametrize(("case", "msg", "spec", "needle"), MALFORMED_TENSORS, ids=[m[0] for m in MALFORMED_TENSORS])
def test_malformed_tensor_is_refused_naming_the_field(case: str, msg: tensor_pb2.Tensor, spec: dict,
                                                      needle: str) -> None:
    with pytest.raises(InvalidInput) as err:
        codec.from_tensor(msg, field="prompt_embeds", **spec)
    assert "prompt_embeds" in str(err.value) and needle in str(err.value)


def test_tensor_over_cap_is_resource_exhausted_before_allocation() -> None:
    huge = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=(1 << 20, 1 << 20), data=b"")
    with pytest.raises(ResourceExhausted, match="exceeds the limit of 1024 bytes"):
        codec.from_tensor(huge, field="x", max_bytes=1024)


def _chunks(n: int = 4, chunk_bytes: int = 8) -> list[tensor_pb2.TensorChunk]:
    return list(codec.iter_tensor_chunks(np.arange(n * 2, dtype=np.float32), chunk_bytes=chunk_bytes))


def test_chunk_header_changing_mid_stream_is_refused() -> None:
    chunks = _chunks()
    chunks[1].shape[:] = [9]
    with pytest.raises(InvalidInput, match="changed mid-stream"):
        codec.assemble_tensor(iter(chunks), "emb", max_bytes=1 << 20)


def test_chunk_with_gap_or_overlap_is_refused() -> None:
    chunks = _chunks()
    chunks[2].offset += 4
    with pytest.raises(InvalidInput, match="offset: expected 16, got 20"):
        codec.assemble_tensor(iter(chunks), "emb", max_bytes=1 << 20)


def test_truncated_and_empty_and_overlong_streams_are_refused() -> None:
    chunks = _chunks()
    with pytest.raises(InvalidInput, match="ended after 24 of 32 bytes"):
        codec.assemble_tensor(iter(chunks[:-1]), "emb", max_bytes=1 << 20)
    with pytest.raises(InvalidInput, match="empty stream"):
        codec.assemble_tensor(iter([]), "emb", max_bytes=1 << 20)
    extra = tensor_pb2.TensorChunk(dtype=chunks[0].dtype, shape=chunks[0].shape, offset=32, data=b"1234")
    with pytest.raises(InvalidInput, match="more than the 32 bytes"):
        codec.assemble_tensor(iter([*chunks, extra]), "emb", max_bytes=1 << 20)
    with pytest.raises(ResourceExhausted, match="limit of 16 bytes"):
        codec.assemble_tensor(iter(chunks), "emb", max_bytes=16)


def _audio(rate: int = 16000, channels: int = 1, frames: int = 100, dtype: str = "float32") -> tensor_pb2.AudioChunk:
    return next(audio.iter_audio_chunks(np.zeros((channels, frames), np.float32), rate, dtype=dtype))


@pytest.mark.parametrize(
    ("chunks", "error", "needle"),
    [
        ([_audio(rate=0)], InvalidInput, "sample_rate: expected 1..384000 Hz, got 0"),
        ([_audio(rate=10_000_000)], InvalidInput, "got 10000000"),
        ([_audio(channels=3)], InvalidInput, "channels: expected 1 or 2, got 3"),
        ([_audio(), _audio(rate=8000)], InvalidInput, "format changed mid-stream"),
        ([_audio(), _audio(channels=2)], InvalidInput, "format changed mid-stream"),
        ([tensor_pb2.AudioChunk(sample_rate=8000, channels=1, samples=codec.to_tensor(np.zeros((2, 5), np.float32)))],
         InvalidInput, "shape[0]: expected 1, got 2"),
        ([tensor_pb2.AudioChunk(sample_rate=8000, channels=1, samples=codec.to_tensor(np.zeros((1, 5), np.int32)))],
         InvalidInput, "expected float16 or float32, got int32"),
        ([tensor_pb2.AudioChunk(sample_rate=8000, channels=1,
                                samples=codec.to_tensor(np.array([[0.0, np.nan]], np.float32)))],
         InvalidInput, "finite"),
        ([], InvalidInput, "empty audio"),
        ([_audio(frames=600)], ResourceExhausted, "limit of 500 frames"),
        ([_audio(frames=400)] * 2, ResourceExhausted, "limit of"),
    ],
)
def test_malformed_audio_stream_is_refused_clearly(chunks: list, error: type, needle: str) -> None:
    asm = audio.AudioAssembler("audio", max_frames=500, max_bytes=2400)
    with pytest.raises(error) as err:
        for c in chunks:
            asm.add(c)
        asm.result()
    assert needle in str(err.value)
