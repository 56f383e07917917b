"""The streaming framer without a model: exact centre framing, bounded memory, batches across signals."""

from __future__ import annotations

import numpy as np
import pytest

from audiomemory.audio_encoder.stream import EmbedStream, SignalFramer, embed_array, frame_count

from .streams import tone


class Probe:
    """A stand-in model that records its batches and answers each window's first, middle and last sample."""

    sample_rate = 48_000
    window = 48_000
    embedding_dim = 3

    def __init__(self, hop: int = 4800, batch_size: int = 8) -> None:
        self.hop = hop
        self.batch_size = batch_size
        self.batches: list[int] = []
        self.windows: list[np.ndarray] = []

    def hop_for(self, seconds: float) -> int:
        return self.hop

    def embed_windows(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[0] <= self.batch_size and batch.dtype == np.float32
        self.batches.append(batch.shape[0])
        self.windows.extend(batch.copy())
        return batch[:, [0, self.window // 2, self.window - 1]].copy()


def reference_windows(mono: np.ndarray, hop: int, window: int = 48_000) -> np.ndarray:
    """The documented rule, written the plain way: pad window/2 zeros before, zeros after, stride by hop."""
    count = frame_count(mono.shape[0], hop, window)
    padded = np.zeros(window // 2 + (count - 1) * hop + window, np.float32)
    padded[window // 2 : window // 2 + mono.shape[0]] = mono
    return np.stack([padded[i * hop : i * hop + window] for i in range(count)])


@pytest.mark.parametrize("seconds", [0.2, 0.5, 0.51, 1.0, 2.37])
def test_streamed_windows_equal_the_centre_rule_whatever_the_chunking(seconds: float) -> None:
    audio = tone(48000, 1, seconds, seed=3)
    probe = Probe()
    stream = EmbedStream(probe, 1)
    rng = np.random.default_rng(0)
    start = 0
    while start < audio.shape[1]:
        size = int(rng.integers(1, 30_000))
        list(stream.add(0, audio[:, start : start + size], 48000))
        start += size
    list(stream.finish())
    np.testing.assert_array_equal(np.stack(probe.windows), reference_windows(audio[0], 4800))


def test_a_signal_keeps_only_its_unconsumed_tail() -> None:
    framer = SignalFramer(48_000, 48_000, 4800)
    out = np.empty((64, 48_000), np.float32)
    piece = tone(48000, 1, 0.25)
    for _ in range(4 * 60):  # one minute
        framer.add(piece, 48000)
        if framer.ready():
            framer.take(min(framer.ready(), 64), out)
        assert framer._tail.shape[0] < 48_000 + piece.shape[1]


def test_ready_windows_of_all_signals_share_one_model_call() -> None:
    probe = Probe(hop=24_000, batch_size=8)
    stream = EmbedStream(probe, 4)
    answered = []
    for block in range(6):
        for signal in range(4):
            answered += list(stream.add(signal, tone(48000, 1, 0.5, seed=block)[:, :24_000], 48000))
    answered += list(stream.finish())
    assert max(probe.batches) == 8 and sum(probe.batches) == 4 * frame_count(6 * 24_000, 24_000)
    # The first call waits for a full batch, then holds two windows of each of the four stems.
    assert probe.batches[0] == 8 and {f.signal for f in answered[:4]} == {0, 1, 2, 3}
    assert stream.done == sum(probe.batches)


def test_stereo_and_resampled_input_stream_like_one_piece() -> None:
    audio = tone(44100, 2, 1.7, seed=4)
    whole, _ = embed_array(Probe(), audio, 44100)
    probe = Probe()
    stream = EmbedStream(probe, 1)
    for start in range(0, audio.shape[1], 7_001):
        list(stream.add(0, audio[:, start : start + 7_001], 44100))
    list(stream.finish())
    np.testing.assert_allclose(np.stack(probe.windows)[:, [0, 24_000, 47_999]], whole, atol=1e-6)
    assert whole.shape[0] == frame_count(round(1.7 * 48000), 4800)


@pytest.mark.parametrize(
    ("samples", "hop", "expected"),
    [
        (0, 4800, 1),
        (24000, 4800, 1),              # exactly half a window: the centred window still holds it all
        (24001, 4800, 2),
        (48000, 4800, 6),              # 1 s at hop 0.1 → centres 0.0 … 0.5 s
        (48000 * 10, 4800, 96),        # 10 s → centres 0.0 … 9.5 s
        (48000 * 1200, 4800, 11996),   # 20 min → centres 0.0 … 1199.5 s
    ],
)
def test_frame_count_follows_the_documented_centre_rule(samples: int, hop: int, expected: int) -> None:
    assert frame_count(samples, hop) == expected
