"""The gRPC ``Separator`` service: take a model slot, read the song, stream the stems block by block.

``Separate`` reads its first message (the optional ``SeparateOptions``, whose pin it checks), opens as every
model call does (``runtime.servicer``: the ``Served`` header with the stems, rate, channels and dtype it will
deliver, then ``QueueStatus`` while it waits for a model slot, so a queued caller's audio is not held here);
then reads the ``AudioChunk``s (any rate 1..384 kHz, 1 or 2 channels, float32/float16, at most ``max_seconds``),
building the model's input from them part by part; answers one ``StemsHeader`` (the asked stems, in
the asked order); then streams the stems in time order as the backend separates them: per block,
one ``StemChunk`` per stem over the same frames (several rounds when a block is over ~1 MiB a
stem), converted to the caller's format with streaming resamplers. Each stem totals exactly the
header's ``frames`` (the input's duration at the output rate). Memory: the song once at the model
rate, plus about one segment of stems, whatever the song's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from audiomemory.runtime.audio import (
    MAX_SAMPLE_RATE,
    WIRE_AUDIO_DTYPES,
    WIRE_CHANNELS,
    AudioAssembler,
    frames_limit,
    iter_audio_chunks,
    max_audio_bytes,
)
from audiomemory.runtime.codec import CHUNK_BYTES, dtype_enum, dtype_name_safe
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.servicer import ModelServicer, OptionsFirst
from audiomemory.separator.audio import SongBuffer, StemConverter, expected_frames
from audiomemory.separator.backends import SeparatorBackend
from audiomemory.separator.config import SeparatorConfig
from audiomemory.v1 import common_pb2, separator_pb2, separator_pb2_grpc, tensor_pb2

SERVICE = "separator"
#: The stems' dtype on the wire for each one a caller may ask (unspecified: float32).
WIRE_DTYPES = {tensor_pb2.DTYPE_UNSPECIFIED: "float32", **{dtype_enum(n): n for n in WIRE_AUDIO_DTYPES}}


@dataclass(frozen=True)
class OutputFormat:
    sample_rate: int
    channels: int
    dtype: str  # "float32" | "float16"
    stems: tuple[int, ...]  # indices into the backend's stems, in the order asked


class SongAssembler(AudioAssembler):
    """``AudioAssembler``'s checks and caps (from ``max_seconds`` at the first chunk's rate, bytes derived
    from frames, as ``AudioStreamReader``), but each part goes straight into a ``SongBuffer`` at the
    model's rate and channels instead of being kept: the upload is never held beside the song."""

    def __init__(self, field: str, first: tensor_pb2.AudioChunk, max_seconds: float, rate: int, channels: int
                 ) -> None:
        frames = frames_limit(max_seconds, first.sample_rate) if first.sample_rate > 0 else 0
        super().__init__(field, max_frames=frames, max_bytes=max_audio_bytes(frames), keep=False)
        self._model = (rate, channels)
        self.song: SongBuffer | None = None

    def add(self, chunk: tensor_pb2.AudioChunk) -> np.ndarray:
        part = super().add(chunk)  # checked, not kept
        if self.song is None:
            self.song = SongBuffer(self.sample_rate, *self._model, self.max_frames)
        self.song.add(part)
        return part

    def song_result(self) -> np.ndarray:
        if self.song is None or self.frames == 0:
            raise InvalidInput(f"{self.field}: empty audio, the stream held no frames")
        return self.song.result()


class _SeparateCall:
    """One Separate call from its options on: the format asked, then the song read and separated."""

    def __init__(self, servicer: SeparatorServicer, fmt: OutputFormat, context: grpc.ServicerContext) -> None:
        self.backend = servicer.backend
        self.max_seconds = servicer.config.max_seconds
        self.fmt = fmt
        self.context = context

    def resolved(self) -> dict[str, object]:
        names = self.backend.stems
        return {"stems": ",".join(names[i] for i in self.fmt.stems), "sample_rate": self.fmt.sample_rate,
                "channels": self.fmt.channels, "dtype": self.fmt.dtype}

    def _read(self, requests: OptionsFirst[separator_pb2.SeparateRequest]) -> tuple[np.ndarray, int, int]:
        """The song at the model's rate and channels in an array of our own, with the input's length and
        rate (the stems' length follows from them)."""
        song: SongAssembler | None = None
        model = (self.backend.sample_rate, self.backend.channels)
        for _, request in requests.audio():
            song = song or SongAssembler("audio", request.audio, self.max_seconds, *model)
            song.add(request.audio)
        if song is None:
            raise InvalidInput("audio: empty, the stream held no audio chunks")
        return song.song_result(), song.frames, song.sample_rate

    def run(self, requests: OptionsFirst[separator_pb2.SeparateRequest]) -> Iterator[separator_pb2.SeparateResponse]:
        fmt, context = self.fmt, self.context
        audio, frames_in, rate = self._read(requests)
        frames = expected_frames(frames_in, rate, fmt.sample_rate)
        names = self.backend.stems
        yield separator_pb2.SeparateResponse(
            header=separator_pb2.StemsHeader(
                stems=[names[i] for i in fmt.stems], sample_rate=fmt.sample_rate, channels=fmt.channels,
                dtype=dtype_enum(fmt.dtype), frames=frames,
            )
        )
        converter = StemConverter(len(fmt.stems), self.backend.channels, self.backend.sample_rate,
                                  fmt.sample_rate, fmt.channels, frames, float16=fmt.dtype == "float16")
        # Donated: the backend normalises the song in place rather than copying it.
        blocks = self.backend.separate_blocks(audio, self.backend.sample_rate, donate=True,
                                              cancelled=lambda: not context.is_active())
        del audio
        for block in blocks:
            yield from _rounds(converter.convert(block.audio[list(fmt.stems)]), fmt)
        yield from _rounds(converter.finish(), fmt)


def _rounds(stems: np.ndarray, fmt: OutputFormat) -> Iterator[separator_pb2.SeparateResponse]:
    """``[stems, channels, n]`` as rounds of one ``StemChunk`` per stem over the same frames, each at most
    ``CHUNK_BYTES`` of samples."""
    per_stem = [iter_audio_chunks(s, fmt.sample_rate, dtype=fmt.dtype, chunk_bytes=CHUNK_BYTES) for s in stems]
    for chunks in zip(*per_stem, strict=True):
        for index, chunk in enumerate(chunks):
            yield separator_pb2.SeparateResponse(chunk=separator_pb2.StemChunk(stem=index, audio=chunk))


class SeparatorServicer(ModelServicer[SeparatorBackend, SeparatorConfig], separator_pb2_grpc.SeparatorServicer):
    """Thin edge: protobuf ⇄ numpy; the backend does the work."""

    kind = SERVICE
    package = "audiomemory-separator"

    def info(self, model: common_pb2.ModelInfo) -> separator_pb2.SeparatorInfo:
        frames = self._max_frames()
        return separator_pb2.SeparatorInfo(
            model=model, stems=list(self.backend.stems), sample_rate=self.backend.sample_rate,
            channels=self.backend.channels, max_input_frames=frames, max_input_bytes=max_audio_bytes(frames),
            max_input_sample_rate=MAX_SAMPLE_RATE,
        )

    def _max_frames(self) -> int:
        return frames_limit(self.config.max_seconds, self.backend.sample_rate)

    def _stems(self, asked: list[str]) -> tuple[int, ...]:
        known = list(self.backend.stems)
        if not asked:
            return tuple(range(len(known)))
        unknown = [name for name in asked if name not in known]
        if unknown or len(set(asked)) != len(asked):
            raise InvalidInput(
                f"options.stems: expected distinct names among {', '.join(known)}, got {', '.join(asked)[:200]}"
            )
        return tuple(known.index(name) for name in asked)

    def _output_format(self, options: separator_pb2.SeparateOptions) -> OutputFormat:
        out = options.output
        rate = out.sample_rate or self.backend.sample_rate
        if not 1 <= rate <= MAX_SAMPLE_RATE:
            raise InvalidInput(
                f"options.output.sample_rate: expected 0 (native) or 1..{MAX_SAMPLE_RATE} Hz, got {rate}"
            )
        channels = out.channels or self.backend.channels
        if channels not in WIRE_CHANNELS:
            raise InvalidInput(f"options.output.channels: expected 0 (native), 1 or 2, got {channels}")
        if out.dtype not in WIRE_DTYPES:
            raise InvalidInput(
                f"options.output.dtype: expected FLOAT32 or FLOAT16, got {dtype_name_safe(out.dtype)}"
            )
        return OutputFormat(rate, channels, WIRE_DTYPES[out.dtype], self._stems(list(options.stems)))

    def Separate(
        self, request_iterator: Iterator[separator_pb2.SeparateRequest], context: grpc.ServicerContext
    ) -> Iterator[separator_pb2.SeparateResponse]:
        return self.serve_stream(
            context, request_iterator, separator_pb2.SeparateOptions(),
            lambda options: _SeparateCall(self, self._output_format(options), context), separator_pb2.SeparateResponse,
        )


def add_servicer(server: grpc.Server, backend: SeparatorBackend, gate: Gate, config: SeparatorConfig) -> None:
    separator_pb2_grpc.add_SeparatorServicer_to_server(SeparatorServicer(backend, gate, config), server)
