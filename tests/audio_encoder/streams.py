"""Stream helpers for the audio encoder tests: signals, request streams, collecting answers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.codec import from_tensor
from audiomemory.v1 import audio_encoder_pb2, common_pb2


def tone(rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A float32 [channels, frames] test signal: a chord plus a little noise."""
    t = np.arange(round(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    rows = [
        0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) + 0.2 * np.sin(2 * np.pi * 3520 * t)
        + 0.05 * rng.standard_normal(t.shape)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def requests(
    audio: np.ndarray, rate: int, dtype: str = "float32", chunk_bytes: int = 1 << 20, signal: int = 0
) -> Iterator[audio_encoder_pb2.EmbedRequest]:
    """One signal's audio as EmbedRequests (no options: one signal, no timestamps)."""
    for chunk in iter_audio_chunks(audio, rate, dtype=dtype, chunk_bytes=chunk_bytes):
        yield audio_encoder_pb2.EmbedRequest(audio=chunk, signal=signal)


def interleaved(
    signals: list[tuple[np.ndarray, int]], pieces: Iterable[int], options: audio_encoder_pb2.EmbedOptions | None
) -> Iterator[audio_encoder_pb2.EmbedRequest]:
    """Options, then the signals' audio cut into pieces of the given frame counts (cycled), round-robin."""
    if options is not None:
        yield audio_encoder_pb2.EmbedRequest(options=options)
    sizes = list(pieces)
    cursors = [0] * len(signals)
    turn = 0
    while any(c < audio.shape[1] for c, (audio, _) in zip(cursors, signals, strict=True)):
        for index, (audio, rate) in enumerate(signals):
            if cursors[index] >= audio.shape[1]:
                continue
            size = sizes[turn % len(sizes)]
            turn += 1
            part = audio[:, cursors[index] : cursors[index] + size]
            cursors[index] += part.shape[1]
            yield from requests(part, rate, signal=index)


@dataclass
class Answer:
    """An Embed answer, collected: per-signal embeddings/timestamps, progress, queue reports, the end."""

    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    timestamps: dict[int, np.ndarray] = field(default_factory=dict)
    progress: list[tuple[int, int]] = field(default_factory=list)  # (done, total) per frames message
    queued: list[common_pb2.QueueStatus] = field(default_factory=list)
    end: audio_encoder_pb2.EmbedEnd | None = None
    kinds: list[str] = field(default_factory=list)
    served: common_pb2.Served | None = None  # the call's first message


def collect(responses: Iterator[audio_encoder_pb2.EmbedResponse]) -> Answer:
    """Read a whole Embed answer, checking each signal's frames arrive in order and messages are small."""
    answer = Answer()
    rows: dict[int, list[np.ndarray]] = {}
    stamps: dict[int, list[np.ndarray]] = {}
    for response in responses:
        assert response.ByteSize() <= 1 << 20
        kind = response.WhichOneof("item") or ""
        answer.kinds.append(kind)
        if kind == "served":
            assert answer.kinds == ["served"], "the Served header comes first, once"
            answer.served = response.served
        elif kind == "queued":
            answer.queued.append(response.queued)
        elif kind == "frames":
            f = response.frames
            got = from_tensor(f.embeddings, field="embeddings", shape=(None, None), dtypes=("float32",), finite=True)
            assert f.first == sum(r.shape[0] for r in rows.get(f.signal, []))
            rows.setdefault(f.signal, []).append(got)
            if f.HasField("timestamps"):
                stamps.setdefault(f.signal, []).append(from_tensor(f.timestamps, field="t", dtypes=("float64",)))
            answer.progress.append((f.done, f.total))
        else:
            assert kind == "end" and answer.end is None
            answer.end = response.end
    answer.embeddings = {s: np.concatenate(r) for s, r in rows.items()}
    answer.timestamps = {s: np.concatenate(t) for s, t in stamps.items()}
    return answer
