"""What a reel's MP4 must be, checked from its decoded audio and frames (``tests/`` is on ``sys.path``): the song's
own audio, as long as the song and in time with it (cross-correlation), and the picture of each section
between the boundaries, changing at them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from scipy import signal

CHECK_RATE = 8000  # both sides decoded to this for the cross-correlation (0.125 ms a sample)
MAX_OFFSET_S = 0.050
MAX_LENGTH_DIFFERENCE_S = 0.1


def write_stereo(path: Path, audio: np.ndarray, rate: int, codec: str, fmt: str | None = None) -> Path:
    """Encode float32 stereo ``[2, frames]`` into ``path`` with ``codec`` (PyAV), in 4096-sample frames."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        for start in range(0, audio.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start:start + 4096]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            container.mux(packet)
    return path


def decoded_audio(path: Path, rate: int = CHECK_RATE) -> np.ndarray:
    """The file's first audio stream, mono float32 at ``rate``, from its first decoded sample (FFmpeg's
    decoder and resampler, as the orchestrator and the reel read songs)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            frame.pts = None
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def audio_offset(song: np.ndarray, mp4: np.ndarray, rate: int = CHECK_RATE) -> float:
    """Seconds the MP4's audio lags the song's (the cross-correlation's peak)."""
    corr = signal.correlate(mp4, song, mode="full", method="fft")
    return float((int(np.argmax(corr)) - (len(song) - 1)) / rate)


def frames(mp4: Path) -> list[tuple[float, np.ndarray]]:
    """Every video frame of the MP4 with its time, RGB."""
    with av.open(str(mp4)) as container:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(container.streams.video[0])]


def frame_at(shown: Sequence[tuple[float, np.ndarray]], t: float) -> np.ndarray:
    """The frame on screen at ``t`` seconds (the last one shown at or before it)."""
    earlier = [image for when, image in shown if when <= t + 1e-6]
    return earlier[-1] if earlier else shown[0][1]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the two pictures' 8×8 block means: H.264 loses a random-weight model's pixel
    noise (20 levels at crf 23 on a 64-pixel image), not where the picture is light or dark, red or blue."""
    return float(np.abs(_coarse(a) - _coarse(b)).mean())


def _coarse(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.BOX), np.float32)


def check_reel_mp4(mp4: Path, song: Path, pngs: Sequence[bytes], spans: Sequence[tuple[int, int]],
                   fade: float) -> dict[str, float]:
    """The MP4 holds the song's audio (length within 0.1 s, offset at most 50 ms) and, at each boundary, the
    previous section's picture until the crossfade starts and the next one's once it ends; every section's
    picture in its middle. Returns what it measured."""
    heard, sent = decoded_audio(song), decoded_audio(mp4)
    length = abs(len(sent) - len(heard)) / CHECK_RATE
    assert length <= MAX_LENGTH_DIFFERENCE_S, f"the MP4's audio is {length:.3f} s longer or shorter than the song"
    offset = audio_offset(heard, sent)
    assert abs(offset) <= MAX_OFFSET_S, f"the MP4's audio is {offset * 1000:.1f} ms off the song's"
    shown = frames(mp4)
    size = shown[0][1].shape[1], shown[0][1].shape[0]
    pictures = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize(size, Image.Resampling.LANCZOS))
                for png in pngs]
    worst = 0.0
    for i, (start, end) in enumerate(spans):
        middle = frame_at(shown, (start + end) / 2)
        worst = max(worst, _closest(middle, pictures, i, f"the middle of section {i}"))
        if i == 0:
            continue
        before, after = frame_at(shown, start - fade / 2 - 0.1), frame_at(shown, start + fade / 2 + 0.1)
        worst = max(worst, _closest(before, pictures, i - 1, f"just before the boundary at {start} s"))
        worst = max(worst, _closest(after, pictures, i, f"just after the boundary at {start} s"))
        assert difference(after, before) > 2 * _closest(after, pictures, i, ""), f"no change at {start} s"
    return {"offset_s": offset, "length_difference_s": length, "worst_frame_difference": worst}


def _closest(frame: np.ndarray, pictures: Sequence[np.ndarray], want: int, where: str) -> float:
    """The frame is section ``want``'s picture: nearer it than any other section's (H.264 is lossy)."""
    distances = [difference(frame, picture) for picture in pictures]
    others = [d for j, d in enumerate(distances) if j != want and difference(pictures[j], pictures[want]) > 1.0]
    assert not others or distances[want] < min(others) / 2, f"{where}: distances to the sections {distances}"
    return distances[want]
