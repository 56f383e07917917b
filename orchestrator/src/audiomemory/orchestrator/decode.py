"""Decode an uploaded song file into a float32 waveform with PyAV (FFmpeg in the wheel).

``decode_audio(data, filename=..., max_bytes=..., max_seconds=...) -> DecodedAudio`` accepts any
container/codec FFmpeg knows (wav, flac, mp3, ogg/vorbis, opus, m4a/aac, ...), probing the bytes
rather than trusting the file name. The result is float32 ``[channels, frames]`` at the file's own
sample rate: mono stays mono, stereo stays stereo; more than two channels are downmixed to stereo
by FFmpeg's resampler because the wire carries 1 or 2 channels.

Errors (all name what came): empty, non-audio, corrupt or truncated input → ``InvalidInput``;
an upload or a song over the limits → ``ResourceExhausted`` (checked from the header before
decoding when it declares a duration, and again while decoding so a lying header cannot make us
decode an hour of audio).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import av
import av.error
import numpy as np

from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.memory import song_array

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_SECONDS = 20 * 60.0
# A file whose decodable audio is this much shorter than its header declares is truncated (the
# slack absorbs encoder padding and estimated durations of VBR streams).
_TRUNCATED_FRACTION = 0.9
_TRUNCATED_SLACK_S = 0.25
_MOVE = 1 << 20  # samples moved at a time when rows are compacted
# Tags that are not UTF-8 (old Latin-1 Vorbis comments, a damaged header) are read with U+FFFD in place
# of the bad bytes: PyAV decodes every tag as it opens a file, and "strict" made such a song unreadable
# (UnicodeDecodeError, not an FFmpegError) although its audio is fine.
METADATA_ERRORS = "replace"


@dataclass(frozen=True)
class DecodedAudio:
    """The waveform and where it came from (for metadata and messages)."""

    samples: np.ndarray  # float32 [channels, frames], C-contiguous
    sample_rate: int
    container: str  # FFmpeg demuxer name, e.g. "mp3", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # FFmpeg decoder name, e.g. "aac"
    source_channels: int  # channels in the file (before any downmix)

    def without_samples(self) -> DecodedAudio:
        """The same facts (length, rate, channels, source) without holding the waveform: once the audio
        vector is made, a job keeps only these for its metadata."""
        empty = np.broadcast_to(np.zeros((1, 1), np.float32), self.samples.shape)  # no memory of its own
        return replace(self, samples=empty)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _what(filename: str, size: int) -> str:
    return f"{filename!r} ({size} bytes)" if filename else f"the upload ({size} bytes)"


def decode_audio(
    data: bytes | bytearray | memoryview,
    *,
    filename: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> DecodedAudio:
    """Decode ``data`` (a whole encoded file) to float32 ``[channels, frames]`` at its own rate."""
    size = len(data)
    what = _what(filename, size)
    if size == 0:
        raise InvalidInput("file: the upload is empty (0 bytes); send an encoded song file")
    if size > max_bytes:
        raise ResourceExhausted(f"file: {size} bytes is over the upload limit of {max_bytes} bytes")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors=METADATA_ERRORS)
    except av.error.FFmpegError as exc:
        raise InvalidInput(
            f"file: {what} is not an audio file FFmpeg can read: not audio, corrupt or truncated "
            f"({exc.strerror or type(exc).__name__})"
        ) from None
    with container:
        stream = _audio_stream(container, what)
        ctx = stream.codec_context
        rate = int(ctx.sample_rate)
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds * 1.01:
            raise ResourceExhausted(
                f"file: {what} is {declared:.1f} s long, over the limit of {max_seconds:.0f} s"
            )
        source_channels = int(ctx.layout.nb_channels)
        samples = _decode_samples(container, stream, 1 if source_channels == 1 else 2, what, max_seconds,
                                  declared)
        codec_name, container_name = ctx.name, container.format.name
    total = samples.shape[1]
    if declared is not None and total / rate < declared * _TRUNCATED_FRACTION - _TRUNCATED_SLACK_S:
        raise InvalidInput(
            f"file: {what} is truncated: its header declares {declared:.2f} s but only "
            f"{total / rate:.2f} s could be decoded"
        )
    if not np.isfinite(samples).all():
        raise InvalidInput(f"file: {what} decodes to non-finite samples")
    return DecodedAudio(samples=samples, sample_rate=rate, container=container_name, codec=codec_name,
                        source_channels=source_channels)


def _audio_stream(container: av.container.InputContainer, what: str) -> av.audio.stream.AudioStream:
    """The first audio stream, with a sample rate and a channel layout."""
    if not container.streams.audio:
        kinds: list[str] = sorted({s.type for s in container.streams}) or ["nothing"]
        raise InvalidInput(
            f"file: {what} has no audio stream (format {container.format.name!r} holds {', '.join(kinds)})"
        )
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if int(ctx.sample_rate or 0) <= 0 or not ctx.layout or int(ctx.layout.nb_channels) <= 0:
        raise InvalidInput(f"file: {what} declares no sample rate or channel layout")
    return stream


class _Samples:
    """Decoded pieces gathered into one array sized from the declared length (no list-then-concatenate
    doubling: a 20-minute song is 423 MB as stereo float32); pieces past it are gathered apart."""

    def __init__(self, channels: int, expected: int) -> None:
        self.buf = song_array((channels, expected))  # its own pages: back to the OS when freed
        self.held = 0  # frames in buf
        self.frames = 0  # frames in all
        self.extra: list[np.ndarray] = []

    def add(self, piece: np.ndarray) -> None:
        n = piece.shape[1]
        if not self.extra and self.held + n <= self.buf.shape[1]:
            self.buf[:, self.held : self.held + n] = piece
            self.held += n
        else:
            self.extra.append(piece)
        self.frames += n

    def result(self) -> np.ndarray:
        """C-contiguous float32 ``[channels, frames]``: the buffer itself, its rows moved together in place
        when the song was shorter than declared (a stretch at a time, as memmove would)."""
        if self.extra:
            return np.concatenate([self.buf[:, : self.held], *self.extra], axis=1)
        channels, capacity = self.buf.shape
        flat = self.buf.reshape(-1)
        for row in range(1, channels):
            for start in range(0, self.held, _MOVE):
                n = min(_MOVE, self.held - start)
                flat[row * self.held + start : row * self.held + start + n] = \
                    flat[row * capacity + start : row * capacity + start + n]
        return flat[: channels * self.held].reshape(channels, self.held)


def _decode_samples(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, channels: int, what: str,
    max_seconds: float, declared: float | None,
) -> np.ndarray:
    """float32 ``[channels, frames]``: more than two channels downmixed by FFmpeg's resampler; the length
    checked while decoding, so a lying header cannot make us decode an hour of audio."""
    rate = int(stream.codec_context.sample_rate)
    resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=rate)
    max_frames = int(max_seconds * rate) + 1
    expected = min(max_frames, int((declared or 0) * rate * 1.002) + rate)  # a second of slack
    samples = _Samples(channels, expected)
    first: tuple[int, int, str] | None = None
    try:
        for frame in container.decode(stream):
            # The resampler is set up by the first frame (or passes frames that match its output through):
            # a frame of another rate, layout or sample format would fail it or slip through unconverted.
            now = (int(frame.sample_rate), int(frame.layout.nb_channels), frame.format.name)
            first = first or now
            if now != first:
                raise InvalidInput(
                    f"file: {what} changes its audio format mid-stream, from {first[0]} Hz x{first[1]} "
                    f"{first[2]} to {now[0]} Hz x{now[1]} {now[2]}, after {samples.frames / rate:.2f} s"
                )
            for out in resampler.resample(frame):
                samples.add(out.to_ndarray())
            if samples.frames > max_frames:
                raise ResourceExhausted(
                    f"file: {what} decodes to more than {max_seconds:.0f} s of audio, over the limit"
                )
        for out in resampler.resample(None):
            samples.add(out.to_ndarray())
    except av.error.FFmpegError as exc:
        raise InvalidInput(
            f"file: {what} is corrupt or truncated: decoding stopped after {samples.frames / rate:.2f} s "
            f"({exc.strerror or type(exc).__name__})"
        ) from None
    if samples.frames == 0:
        raise InvalidInput(f"file: {what} holds an audio stream with no decodable samples")
    return samples.result()


@dataclass(frozen=True)
class Peek:
    """What the first bytes of an upload say: its declared length (if any) and the decoded format."""

    declared_seconds: float | None
    sample_rate: int
    channels: int  # as decoded: 1 or 2


def peek(head: bytes | bytearray) -> Peek | None:
    """Read the header of a partial upload; None while the bytes cannot be read as audio yet."""
    try:
        with av.open(io.BytesIO(head), mode="r", metadata_errors=METADATA_ERRORS) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            return Peek(_declared_seconds(container, stream), int(ctx.sample_rate),
                        1 if ctx.layout.nb_channels == 1 else 2)
    except (av.error.FFmpegError, ValueError, IndexError):
        return None


def check_declared_length(head: bytes | bytearray, *, filename: str, max_seconds: float) -> Peek | None:
    """Refuse an upload from the bytes received so far when they already declare more than ``max_seconds``
    — the header's length (FLAC, MP4, MP3 with a Xing header) or FFmpeg's estimate from the bytes so far,
    which only grows as more arrive and is the one ``decode_audio`` applies to the whole file — so that
    a caller learns it before sending the rest. Returns what the bytes say (None: nothing readable yet)."""
    seen = peek(head)
    declared = seen.declared_seconds if seen is not None else None
    if declared is not None and declared > max_seconds * 1.01:
        what = repr(filename) if filename else "the upload"
        raise ResourceExhausted(
            f"file: {what} is at least {declared:.1f} s long, over the limit of {max_seconds:.0f} s"
        )
    return seen


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """The duration the file's header claims, if it claims one."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None
