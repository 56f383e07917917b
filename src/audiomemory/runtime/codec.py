"""numpy/torch ⇄ protobuf tensors, validated before use.

Everything that crosses the wire as numbers goes through here:

- ``to_tensor`` / ``from_tensor`` for a whole ``Tensor`` message (raw little-endian C-order bytes,
  as KServe v2 / Triton ``raw_*_contents``). Decoding checks the dtype, the shape against an expected
  spec, the byte length against ``prod(shape) × itemsize`` and, where asked, finiteness — then views the
  bytes with ``numpy.frombuffer`` (no copy; the array is read-only).
- ``iter_tensor_chunks`` / ``TensorAssembler`` for tensors streamed as ``TensorChunk`` pieces: every piece
  repeats the header, offsets must follow each other, and the total is capped before any allocation.
- audio streamed as ``AudioChunk`` runs of frames: ``runtime/audio.py``.
- ``iter_pieces`` for plain bytes (a PNG) split into ``(piece, is_last)`` pairs.
- ``batch_fits`` for a unary request of several prompts (the generator's batch): how many fit one message.

Every streamed message carries at most ``CHUNK_BYTES`` of payload.

Every failure raises ``InvalidInput`` (or ``ResourceExhausted`` for caps) naming the field, what was
expected and what came.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.v1 import tensor_pb2

if TYPE_CHECKING:
    import torch

# Payload bytes per streamed message: 1 MiB less room for the message's own fields, well under
# gRPC's 4 MiB default message limit.
CHUNK_BYTES = (1 << 20) - 1024
# What numpy can represent: at most 64 dimensions, and a size in bytes that fits its index type.
MAX_RANK = 64
_MAX_INDEX = int(np.iinfo(np.intp).max)
# Room kept in a request for all but its tensors' bytes (its other fields, protobuf framing).
MESSAGE_MARGIN = 64 * 1024


@dataclass(frozen=True)
class _DType:
    name: str
    enum: tensor_pb2.DType.ValueType
    numpy: np.dtype[Any]


_DTYPES: tuple[_DType, ...] = (
    _DType("float32", tensor_pb2.DTYPE_FLOAT32, np.dtype("<f4")),
    _DType("float16", tensor_pb2.DTYPE_FLOAT16, np.dtype("<f2")),
    _DType("bfloat16", tensor_pb2.DTYPE_BFLOAT16, np.dtype(ml_dtypes.bfloat16)),
    _DType("float64", tensor_pb2.DTYPE_FLOAT64, np.dtype("<f8")),
    _DType("int64", tensor_pb2.DTYPE_INT64, np.dtype("<i8")),
    _DType("int32", tensor_pb2.DTYPE_INT32, np.dtype("<i4")),
    _DType("uint8", tensor_pb2.DTYPE_UINT8, np.dtype("u1")),
    _DType("bool", tensor_pb2.DTYPE_BOOL, np.dtype("?")),
)
_BY_NAME = {d.name: d for d in _DTYPES}
_BY_ENUM: dict[int, _DType] = {int(d.enum): d for d in _DTYPES}
DTYPE_NAMES: tuple[str, ...] = tuple(d.name for d in _DTYPES)
_FLOATS = frozenset({"float32", "float16", "bfloat16", "float64"})


def dtype_enum(name: str) -> tensor_pb2.DType.ValueType:
    """The wire enum for a numpy-style dtype name ("float32", ...)."""
    try:
        return _BY_NAME[name].enum
    except KeyError:
        raise InvalidInput(f"dtype: expected one of {', '.join(DTYPE_NAMES)}, got {name!r}") from None


def _name_of(dtype: np.dtype[Any]) -> str:
    if dtype == np.dtype(ml_dtypes.bfloat16):
        return "bfloat16"
    name = np.dtype(dtype).newbyteorder("=").name
    if name not in _BY_NAME:
        raise InvalidInput(f"dtype: {name} cannot travel; supported: {', '.join(DTYPE_NAMES)}")
    return name


def as_numpy(x: np.ndarray | torch.Tensor | Any, *, contiguous: bool = True) -> np.ndarray:
    """A little-endian numpy view (or copy) of a numpy array or torch tensor, C-contiguous unless
    ``contiguous=False`` (for callers that only ``tobytes()`` it, which gathers in C order anyway)."""
    if not isinstance(x, np.ndarray) and type(x).__module__.startswith("torch"):
        import torch

        t = x.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    arr = np.asarray(x)
    if contiguous and not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def to_tensor(x: np.ndarray | torch.Tensor, dtype: str | None = None) -> tensor_pb2.Tensor:
    """Encode an array as a ``Tensor`` (one copy: the bytes the message owns, gathered from any layout)."""
    arr = as_numpy(x, contiguous=False)
    if dtype is not None and _name_of(arr.dtype) != dtype:
        arr = arr.astype(_BY_NAME[dtype].numpy, order="C")
    spec = _BY_NAME[_name_of(arr.dtype)]
    return tensor_pb2.Tensor(dtype=spec.enum, shape=arr.shape, data=arr.tobytes())


def _check_header(
    field: str,
    dtype: int,
    shape: Sequence[int],
    expected_shape: Sequence[int | None] | None,
    dtypes: Collection[str] | None,
    max_bytes: int | None,
) -> tuple[_DType, tuple[int, ...], int]:
    """Validate dtype and shape; return the dtype, the shape and the total byte count."""
    spec = _BY_ENUM.get(dtype)
    if spec is None:
        raise InvalidInput(f"{field}.dtype: expected one of {', '.join(DTYPE_NAMES)}, got wire value {dtype}")
    if dtypes is not None and spec.name not in dtypes:
        raise InvalidInput(f"{field}.dtype: expected {' or '.join(sorted(dtypes))}, got {spec.name}")
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{field}.shape: at most {MAX_RANK} dimensions, got {len(shape)}")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidInput(f"{field}.shape: dimensions must be >= 0, got {list(dims)}")
    if expected_shape is not None:
        if len(dims) != len(expected_shape):
            want = ["*" if d is None else d for d in expected_shape]
            raise InvalidInput(f"{field}.shape: expected rank {len(expected_shape)} {want}, got {list(dims)}")
        for axis, (got, want_dim) in enumerate(zip(dims, expected_shape, strict=True)):
            if want_dim is not None and got != want_dim:
                raise InvalidInput(f"{field}.shape[{axis}]: expected {want_dim}, got {got} (shape {list(dims)})")
    # numpy refuses (ValueError) a shape whose non-zero dimensions overflow its index type, even holding 0 items.
    if math.prod(d for d in dims if d) * spec.numpy.itemsize > _MAX_INDEX:
        raise InvalidInput(f"{field}.shape: {list(dims)} is too large to address")
    nbytes = math.prod(dims) * spec.numpy.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise ResourceExhausted(f"{field}: {nbytes} bytes (shape {list(dims)}) exceeds the limit of {max_bytes} bytes")
    return spec, dims, nbytes


def _check_finite(field: str, arr: np.ndarray, name: str) -> None:
    if name not in _FLOATS or arr.size == 0:
        return
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInput(f"{field}: values must be finite, got {bad} NaN/inf value(s), first at index {first}")


def from_tensor(
    msg: tensor_pb2.Tensor,
    *,
    field: str,
    shape: Sequence[int | None] | None = None,
    dtypes: Collection[str] | None = None,
    finite: bool = False,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode a ``Tensor`` after validating it; the result views the message bytes (read-only)."""
    spec, dims, nbytes = _check_header(field, msg.dtype, msg.shape, shape, dtypes, max_bytes)
    data = msg.data
    if len(data) != nbytes:
        raise InvalidInput(
            f"{field}.data: expected {nbytes} bytes for shape {list(dims)} {spec.name}, got {len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=spec.numpy).reshape(dims)
    if finite:
        _check_finite(field, arr, spec.name)
    return arr


def numpy_to_torch(arr: np.ndarray) -> torch.Tensor:
    """Share an array's memory with a torch tensor (bfloat16 included); read-only arrays stay unwritten."""
    import torch

    with warnings.catch_warnings():
        # frombuffer'd arrays are read-only; torch warns but shares the memory, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        if arr.dtype == np.dtype(ml_dtypes.bfloat16):
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)


def iter_tensor_chunks(
    x: np.ndarray | torch.Tensor, chunk_bytes: int = CHUNK_BYTES, dtype: str | None = None
) -> Iterator[tensor_pb2.TensorChunk]:
    """Split a tensor into ``TensorChunk`` pieces of at most ``chunk_bytes`` (one piece if it is empty)."""
    arr = as_numpy(x)
    if dtype is not None and _name_of(arr.dtype) != dtype:
        arr = arr.astype(_BY_NAME[dtype].numpy, order="C")
    enum = _BY_NAME[_name_of(arr.dtype)].enum
    raw = arr.reshape(-1).view(np.uint8)
    total = len(raw)
    offset = 0
    while True:
        end = min(offset + chunk_bytes, total)
        yield tensor_pb2.TensorChunk(dtype=enum, shape=arr.shape, offset=offset, data=raw[offset:end].tobytes())
        offset = end
        if offset >= total:
            return


class TensorAssembler:
    """Reassembles a streamed tensor, validating every piece before it is copied in."""

    def __init__(
        self,
        field: str,
        *,
        max_bytes: int,
        shape: Sequence[int | None] | None = None,
        dtypes: Collection[str] | None = None,
        finite: bool = False,
    ) -> None:
        self.field = field
        self._max_bytes = max_bytes
        self._shape = shape
        self._dtypes = dtypes
        self._finite = finite
        self._header: tuple[int, tuple[int, ...]] | None = None
        self._spec: _DType | None = None
        self._buffer: np.ndarray | None = None
        self._received = 0
        self._pieces = 0

    def add(self, chunk: tensor_pb2.TensorChunk) -> None:
        where = f"{self.field} (piece {self._pieces})"
        header = (chunk.dtype, tuple(chunk.shape))
        if self._header is None:
            spec, _, nbytes = _check_header(
                self.field, chunk.dtype, chunk.shape, self._shape, self._dtypes, self._max_bytes
            )
            self._header, self._spec = header, spec
            self._buffer = np.empty(nbytes, dtype=np.uint8)
        elif header != self._header:
            raise InvalidInput(
                f"{where}: dtype/shape changed mid-stream from {dtype_name_safe(self._header[0])} "
                f"{list(self._header[1])} to {dtype_name_safe(header[0])} {list(header[1])}"
            )
        assert self._buffer is not None
        if chunk.offset != self._received:
            raise InvalidInput(f"{where}.offset: expected {self._received}, got {chunk.offset}")
        end = self._received + len(chunk.data)
        if end > len(self._buffer):
            raise InvalidInput(
                f"{where}.data: {end} bytes so far, more than the {len(self._buffer)} bytes the shape holds"
            )
        self._buffer[self._received : end] = np.frombuffer(chunk.data, dtype=np.uint8)
        self._received = end
        self._pieces += 1

    def result(self) -> np.ndarray:
        if self._header is None or self._buffer is None or self._spec is None:
            raise InvalidInput(f"{self.field}: empty stream, no tensor pieces arrived")
        if self._received != len(self._buffer):
            raise InvalidInput(
                f"{self.field}: stream ended after {self._received} of {len(self._buffer)} bytes"
            )
        arr = self._buffer.view(self._spec.numpy).reshape(self._header[1])
        if self._finite:
            _check_finite(self.field, arr, self._spec.name)
        return arr


def dtype_name_safe(enum: int) -> str:
    spec = _BY_ENUM.get(enum)
    return spec.name if spec else f"wire value {enum}"


def assemble_tensor(chunks: Iterator[tensor_pb2.TensorChunk], field: str, **kwargs: Any) -> np.ndarray:
    """Reassemble a whole stream of ``TensorChunk`` (see ``TensorAssembler`` for the checks)."""
    assembler = TensorAssembler(field, **kwargs)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.result()


def iter_pieces(data: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bool]]:
    """Split ``data`` into ``(piece, is_last)`` pairs of at most ``size`` bytes, in order; empty
    ``data`` gives one empty last piece."""
    if size < 1:
        raise ValueError(f"size: expected at least 1 byte, got {size}")
    total = len(data)
    offset = 0
    while True:
        end = min(offset + size, total)
        yield data[offset:end], end >= total
        offset = end
        if offset >= total:
            return


def batch_fits(max_message_bytes: int, tokens: int, dim: int) -> int:
    """How many prompts one message of ``max_message_bytes`` carries with as many negative prompts: B items of
    ``[tokens, dim]`` float32 twice, and ``MESSAGE_MARGIN`` to spare (at least 1)."""
    return max(1, (max_message_bytes - MESSAGE_MARGIN) // (2 * max(tokens, 1) * max(dim, 1) * 4))
