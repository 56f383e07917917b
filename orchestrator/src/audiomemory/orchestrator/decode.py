"""Decode an uploaded song file into a float32 waveform with PyAV (FFmpeg in the wheel).

``decode_audio(data, filename=..., max_bytes=..., max_seconds=..., max_frames=...) -> DecodedAudio``
accepts any container/codec FFmpeg knows (wav, flac, mp3, ogg/vorbis, opus, m4a/aac, ...), probing the
bytes rather than trusting the file name. The result is float32 ``[channels, frames]`` at the file's own
sample rate up to ``MAX_DECODED_RATE`` (48 kHz), a higher rate resampled as it is decoded (FFmpeg's
resampler): so a song of ``max_seconds`` is at most 20 min × 48 kHz × 2 ch × 4 B = 461 MB, whatever its
file says. Mono stays mono, stereo stays stereo; more than two channels are downmixed to stereo by the
same resampler because the wire carries 1 or 2 channels.

Size is bounded before it is paid for: the header is read first, and a rate over ``max_sample_rate`` or a
declared length over ``max_seconds`` is refused before a sample is decoded; ``reserve_frames`` is what a
job reserves from the header (its declared length at the delivered rate, else ``max_seconds``), and
decoding stops the moment it would produce more than ``max_frames`` (what was reserved), so a tiny file
that decodes to gigabytes, or a header that lies, costs at most its reservation.

Errors (all name what came): empty, non-audio, corrupt or truncated input, or a rate over the limit →
``InvalidInput``; an upload or a song over the limits → ``ResourceExhausted``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import av
import av.error
import numpy as np

from audiomemory.runtime.audio import MAX_SAMPLE_RATE
from audiomemory.runtime.config import MAX_SONG_SECONDS
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.memory import song_array

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_SECONDS = MAX_SONG_SECONDS  # the system's one length limit (runtime.config)
#: The highest rate a song is delivered at (higher rates are resampled while decoding; no model here
#: uses more: Demucs 44.1 kHz, OpenL3 48 kHz, Whisper 16 kHz).
MAX_DECODED_RATE = 48_000
#: The highest rate a file may declare by default: the wire's limit (the DXD rate; FLAC allows 655 350 Hz, a WAV
#: header anything).
DEFAULT_MAX_SAMPLE_RATE = MAX_SAMPLE_RATE
# A header's length is reserved with this much room for encoder padding and estimated (VBR) durations.
_RESERVE_FRACTION = 1.05
_RESERVE_SLACK_S = 2.0
# A file whose decodable audio is this much shorter than its header declares is truncated (the
# slack absorbs encoder padding and estimated durations of VBR streams).
_TRUNCATED_FRACTION = 0.9
_TRUNCATED_SLACK_S = 0.25
_MOVE = 1 << 20  # samples moved at a time when rows are compacted
_COMPACT_FRACTION = 0.9  # rows of a song at least this share of its reservation are moved together in place
# Tags that are not UTF-8 (old Latin-1 Vorbis comments, a damaged header) are read with U+FFFD in place
# of the bad bytes: PyAV decodes every tag as it opens a file, and "strict" made such a song unreadable
# (UnicodeDecodeError, not an FFmpegError) although its audio is fine.
METADATA_ERRORS = "replace"


@dataclass(frozen=True)
class DecodedAudio:
    """The waveform and where it came from (for metadata and messages)."""

    samples: np.ndarray  # float32 [channels, frames], C-contiguous
    sample_rate: int  # as delivered: the file's, or MAX_DECODED_RATE when the file's is higher
    container: str  # FFmpeg demuxer name, e.g. "mp3", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # FFmpeg decoder name, e.g. "aac"
    source_channels: int  # channels in the file (before any downmix)
    source_rate: int  # the file's sample rate (before any resampling)

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


def delivered_rate(rate: int) -> int:
    """The rate a file of ``rate`` Hz is decoded to."""
    return min(rate, MAX_DECODED_RATE)


def reserve_frames(declared_seconds: float | None, rate: int, max_seconds: float) -> int:
    """The frames (at the delivered rate) a job reserves for a file whose header says ``declared_seconds``
    (None: nothing) at ``rate`` Hz: the declared length with a little room, never more than ``max_seconds``."""
    seconds = max_seconds
    if declared_seconds is not None:
        seconds = min(max_seconds, declared_seconds * _RESERVE_FRACTION + _RESERVE_SLACK_S)
    return int(seconds * delivered_rate(rate)) + 1


def check_rate(rate: int, max_sample_rate: int, what: str) -> None:
    if rate > max_sample_rate:
        raise InvalidInput(
            f"file: {what} has a sample rate of {rate} Hz, over the limit max_sample_rate={max_sample_rate} Hz"
        )


def decode_audio(
    data: bytes | bytearray | memoryview,
    *,
    filename: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_sample_rate: int = DEFAULT_MAX_SAMPLE_RATE,
    max_frames: int | None = None,
    grow: Callable[[int], bool] | None = None,
) -> DecodedAudio:
    """Decode ``data`` (a whole encoded file) to float32 ``[channels, frames]`` at its own rate (at most
    ``MAX_DECODED_RATE``), producing at most ``max_frames`` frames (default: what ``reserve_frames`` gives
    for its header) — or as many more as ``grow(frames)`` grants, up to ``max_seconds``."""
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
        source_rate = int(ctx.sample_rate)
        check_rate(source_rate, max_sample_rate, what)
        rate = delivered_rate(source_rate)
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds * 1.01:
            raise ResourceExhausted(
                f"file: {what} is {declared:.1f} s long, over the limit of {max_seconds:.0f} s"
            )
        source_channels = int(ctx.layout.nb_channels)
        limit = _Limit(max_frames if max_frames is not None else reserve_frames(declared, source_rate, max_seconds),
                       int(max_seconds * rate) + 1, declared, grow)
        samples = _decode_samples(container, stream, 1 if source_channels == 1 else 2, what, rate, limit)
        codec_name, container_name = ctx.name, container.format.name
    total = samples.shape[1]
    if declared is not None and total / rate < declared * _TRUNCATED_FRACTION - _TRUNCATED_SLACK_S:
        raise InvalidInput(
            f"file: {what} is truncated: its header declares {declared:.2f} s but only "
            f"{total / rate:.2f} s could be decoded"
        )
    return DecodedAudio(samples=samples, sample_rate=rate, container=container_name, codec=codec_name,
                        source_channels=source_channels, source_rate=source_rate)


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


@dataclass
class _Limit:
    """How many frames decoding may produce: ``frames`` (what the job reserved; ``grow`` may grant more),
    never more than ``max_frames`` (the length limit); ``declared`` the header's length, for the message."""

    frames: int
    max_frames: int
    declared: float | None
    grow: Callable[[int], bool] | None = None

    def allows(self, frames: int) -> bool:
        if frames <= self.frames:
            return True
        wanted = min(self.max_frames, max(frames, 2 * self.frames))
        if frames <= self.max_frames and self.grow is not None and self.grow(wanted):
            self.frames = wanted
            return True
        return False


class _Samples:
    """Decoded pieces gathered into one array of the reserved length (its own pages, committed only as they
    are written: no list-then-concatenate doubling, a 20-minute song is 461 MB as stereo float32); a piece
    that would pass the reservation, or is not finite, stops decoding there — unless more room is granted
    (``_Limit.allows``: the array is then moved into a larger one, a rare path)."""

    def __init__(self, channels: int, limit: _Limit, what: str, rate: int) -> None:
        self.buf = song_array((channels, limit.frames))
        self.limit = limit
        self.what = what
        self.rate = rate
        self.held = 0  # frames in buf

    @property
    def frames(self) -> int:
        return self.held

    def add(self, piece: np.ndarray) -> None:
        n = piece.shape[1]
        if not self.limit.allows(self.held + n):
            raise ResourceExhausted(self._over())
        if not np.isfinite(piece).all():  # piece by piece: no mask the size of the song
            raise InvalidInput(f"file: {self.what} decodes to non-finite samples")
        if self.held + n > self.buf.shape[1]:  # more room was granted: a larger array
            larger = song_array((self.buf.shape[0], self.limit.frames))
            larger[:, : self.held] = self.buf[:, : self.held]
            self.buf = larger
        self.buf[:, self.held : self.held + n] = piece
        self.held += n

    def _over(self) -> str:
        seconds = self.limit.frames / self.rate
        if self.limit.frames >= self.limit.max_frames:
            return f"file: {self.what} decodes to more than {seconds:.0f} s of audio, over the limit"
        declared = "" if self.limit.declared is None else f"its header declares {self.limit.declared:.1f} s and "
        return (f"file: {self.what} decodes to more than the {seconds:.1f} s reserved for it ({declared}the job "
                "reserved memory for that): the file's header understates its length; re-encode it")

    def result(self) -> np.ndarray:
        """C-contiguous float32 ``[channels, frames]``: the buffer itself, its rows moved together in place
        when the song was a little shorter than reserved (a stretch at a time, as memmove would); copied into
        an array of its own when much shorter (rows moved in place would commit the pages between them)."""
        channels, capacity = self.buf.shape
        if channels > 1 and self.held < _COMPACT_FRACTION * capacity:
            exact = song_array((channels, self.held))
            exact[:] = self.buf[:, : self.held]
            return exact
        flat = self.buf.reshape(-1)
        for row in range(1, channels):
            for start in range(0, self.held, _MOVE):
                n = min(_MOVE, self.held - start)
                flat[row * self.held + start : row * self.held + start + n] = \
                    flat[row * capacity + start : row * capacity + start + n]
        return flat[: channels * self.held].reshape(channels, self.held)


def _decode_samples(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, channels: int, what: str,
    rate: int, limit: _Limit,
) -> np.ndarray:
    """float32 ``[channels, frames]`` at ``rate``: more than two channels downmixed and a higher rate
    resampled by FFmpeg's resampler; the length checked piece by piece against ``limit``, so a lying header
    cannot make us decode an hour of audio."""
    resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=rate)
    samples = _Samples(channels, limit, what, rate)
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
    sample_rate: int  # the file's
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


def check_declared_length(head: bytes | bytearray, *, filename: str, max_seconds: float,
                          max_sample_rate: int = DEFAULT_MAX_SAMPLE_RATE) -> Peek | None:
    """Refuse an upload from the bytes received so far when they already declare more than ``max_seconds``
    — the header's length (FLAC, MP4, MP3 with a Xing header) or FFmpeg's estimate from the bytes so far,
    which only grows as more arrive and is the one ``decode_audio`` applies to the whole file — or a rate
    over ``max_sample_rate``, so that a caller learns it before sending the rest. Returns what the bytes
    say (None: nothing readable yet)."""
    seen = peek(head)
    declared = seen.declared_seconds if seen is not None else None
    what = repr(filename) if filename else "the upload"
    if seen is not None:
        check_rate(seen.sample_rate, max_sample_rate, what)
    if declared is not None and declared > max_seconds * 1.01:
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
