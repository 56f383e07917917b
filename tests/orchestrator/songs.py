"""Song files made in the test with PyAV's encoders (no binary fixtures in the repo)."""

from __future__ import annotations

import io

import av
import numpy as np

# extension → (container format, encoder, encoder options)
FORMATS: dict[str, tuple[str, str, dict[str, str]]] = {
    "wav": ("wav", "pcm_s16le", {}),
    "flac": ("flac", "flac", {}),
    "mp3": ("mp3", "libmp3lame", {}),
    "ogg": ("ogg", "vorbis", {"strict": "-2"}),  # FFmpeg's native (experimental) Vorbis encoder
    "opus": ("ogg", "libopus", {}),
    "m4a": ("ipod", "aac", {}),
}


def tone(rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A small chord plus a little noise, float32 [channels, frames], different per channel."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    rows = []
    for ch in range(channels):
        base = 220.0 * (1 + ch * 0.5) * (1 + seed * 0.1)
        x = 0.2 * np.sin(2 * np.pi * base * t) + 0.1 * np.sin(2 * np.pi * base * 1.5 * t)
        rows.append(x + 0.01 * rng.standard_normal(t.size))
    return np.asarray(rows, dtype=np.float32)


def encode_song(ext: str, rate: int, channels: int, seconds: float = 1.0, seed: int = 0,
                bit_rate: int | None = None) -> bytes:
    """Encode ``tone(...)`` as a complete file of the named kind, in memory."""
    return encode_samples(ext, tone(rate, channels, seconds, seed), rate, bit_rate)


def encode_samples(ext: str, samples: np.ndarray, rate: int, bit_rate: int | None = None) -> bytes:
    """Encode float32 ``[channels, frames]`` (1 or 2 channels) as a complete file of the named kind, in memory
    (a lossy codec at ``bit_rate`` bits/s where given, else at its encoder's default)."""
    fmt, codec, options = FORMATS[ext]
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream: av.audio.stream.AudioStream = container.add_stream(codec, rate=rate, layout=layout)  # type: ignore[assignment]
        stream.codec_context.options = dict(options)
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
