"""The gRPC ``Separator`` service: validate, call the backend under the gate, stream stems back.

``Separate`` reads an optional ``SeparateOptions`` then ``AudioChunk``s (any rate 1..384 kHz,
1 or 2 channels, float32/float16, capped by ``max_seconds`` and ``max_input_bytes``), separates,
and answers one ``StemsHeader`` then every stem, in order, as ``StemChunk``s in the format the
caller asked for (rate, channels, wire dtype). Each stem is exactly as long as the input, at the
output rate. Each response message carries at most ~1 MiB of samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from audiomemory.runtime.audio import MAX_SAMPLE_RATE, AudioStreamReader, frames_limit, iter_audio_chunks
from audiomemory.runtime.codec import CHUNK_BYTES, dtype_enum, dtype_name_safe
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.service import Gate
from audiomemory.separator.audio import expected_frames, to_output_format
from audiomemory.separator.backends import SeparatorBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.v1 import common_pb2, separator_pb2, separator_pb2_grpc, tensor_pb2

SERVICE = "separator"
WIRE_DTYPES = {
    tensor_pb2.DTYPE_UNSPECIFIED: "float32",
    tensor_pb2.DTYPE_FLOAT32: "float32",
    tensor_pb2.DTYPE_FLOAT16: "float16",
}


@dataclass(frozen=True)
class OutputFormat:
    sample_rate: int
    channels: int
    dtype: str  # "float32" | "float16"


class SeparatorServicer(separator_pb2_grpc.SeparatorServicer):
    """Thin edge: protobuf ⇄ numpy; the backend does the work."""

    def __init__(self, backend: SeparatorBackend, gate: Gate, config: SeparatorConfig) -> None:
        self.backend = backend
        self.gate = gate
        self.config = config

    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> separator_pb2.SeparatorInfo:
        self.gate.check_ready()
        return separator_pb2.SeparatorInfo(
            model=self.backend.describe().to_proto(SERVICE, package="audiomemory-separator"),
            stems=list(self.backend.stems),
            sample_rate=self.backend.sample_rate,
            channels=self.backend.channels,
            max_input_frames=frames_limit(self.config.max_seconds, self.backend.sample_rate),
            max_input_bytes=self.config.max_input_bytes,
        )

    def _output_format(self, options: separator_pb2.SeparateOptions) -> OutputFormat:
        out = options.output
        rate = out.sample_rate or self.backend.sample_rate
        if not 1 <= rate <= MAX_SAMPLE_RATE:
            raise InvalidInput(
                f"options.output.sample_rate: expected 0 (native) or 1..{MAX_SAMPLE_RATE} Hz, got {rate}"
            )
        channels = out.channels or self.backend.channels
        if channels not in (1, 2):
            raise InvalidInput(f"options.output.channels: expected 0 (native), 1 or 2, got {channels}")
        if out.dtype not in WIRE_DTYPES:
            raise InvalidInput(
                f"options.output.dtype: expected FLOAT32 or FLOAT16, got {dtype_name_safe(out.dtype)}"
            )
        return OutputFormat(rate, channels, WIRE_DTYPES[out.dtype])

    def _read(
        self, requests: Iterator[separator_pb2.SeparateRequest]
    ) -> tuple[OutputFormat, np.ndarray, int]:
        fmt: OutputFormat | None = None
        audio = AudioStreamReader("audio", max_seconds=self.config.max_seconds)
        for i, request in enumerate(requests):
            item = request.WhichOneof("item")
            if item == "options":
                if fmt is not None or audio.started:
                    raise InvalidInput(f"requests[{i}].options: options come at most once, before any audio")
                fmt = self._output_format(request.options)
            elif item == "audio":
                audio.add(request.audio)
            else:
                raise InvalidInput(f"requests[{i}]: empty request, expected options or audio")
        samples, rate = audio.result()
        return fmt or self._output_format(separator_pb2.SeparateOptions()), samples, rate

    def Separate(
        self, request_iterator: Iterator[separator_pb2.SeparateRequest], context: grpc.ServicerContext
    ) -> Iterator[separator_pb2.SeparateResponse]:
        self.gate.check_ready()
        fmt, audio, rate = self._read(request_iterator)
        with self.gate.slot(context):
            stems = self.backend.separate(audio, rate, cancelled=lambda: not context.is_active())
        frames = expected_frames(audio.shape[1], rate, fmt.sample_rate)
        yield separator_pb2.SeparateResponse(
            header=separator_pb2.StemsHeader(
                stems=list(stems.names),
                sample_rate=fmt.sample_rate,
                channels=fmt.channels,
                dtype=dtype_enum(fmt.dtype),
                frames=frames,
            )
        )
        for index in range(len(stems.names)):
            # One stem at a time, so the converted copy is never more than one stem.
            stem = to_output_format(stems.audio[index], stems.sample_rate, fmt.sample_rate, fmt.channels, frames,
                                    float16=fmt.dtype == "float16")
            for chunk in iter_audio_chunks(stem, fmt.sample_rate, dtype=fmt.dtype, chunk_bytes=CHUNK_BYTES):
                yield separator_pb2.SeparateResponse(chunk=separator_pb2.StemChunk(stem=index, audio=chunk))


def add_servicer(server: grpc.Server, backend: SeparatorBackend, gate: Gate, config: SeparatorConfig) -> None:
    separator_pb2_grpc.add_SeparatorServicer_to_server(SeparatorServicer(backend, gate, config), server)
