"""The front half of a job: the decoded song → its pooled audio vector ``a`` (DESIGN.md §1).

``FrontHalf.audio_vector(job, infos, song, sha256)`` is a generator of progress ``Event``s that returns
an ``AudioVector``: from the cache when the same song went through the same separator and audio
encoder before, else

    separate ──stems, block by block──▶ embed (the four stems in one call) ──frames──▶ pool

with the separator's pieces handed to the audio encoder as they arrive (through a bounded queue, so a
slow encoder slows the separator rather than filling memory) and the frames pooled as they arrive
(``StemPool``), so that nothing here holds a whole stem or every frame. Two threads pump the two
calls; this generator relays their progress: seconds of audio separated, frames embedded over all
stems, or a place in line while a service is busy.
"""

from __future__ import annotations

import queue
from collections.abc import Generator, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass

import av
import numpy as np

from audiomemory.orchestrator.cache import AudioCache, CachedAudio, cache_key
from audiomemory.orchestrator.compatibility import NAMES, Infos
from audiomemory.orchestrator.decode import DecodedAudio
from audiomemory.orchestrator.downstream import (
    Downstream,
    Embedded,
    Frames,
    Queued,
    StemFormat,
    StemPiece,
    StemsStarted,
)
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.pooling import STEM_ORDER, StemPool
from audiomemory.v1 import common_pb2, orchestrator_pb2, tensor_pb2

Stage = orchestrator_pb2.Stage
_FEED_PIECES = 32  # stem pieces (≤ 1 MiB each) waiting for the audio encoder at most
_POLL_S = 0.2
_JOIN_S = 30.0  # a cancelled pump ends at its next message; this bounds a stuck one


@dataclass(frozen=True)
class Event:
    """Progress of a job, for the caller (the servicer turns it into a ``StageEvent``)."""

    stage: orchestrator_pb2.Stage.ValueType
    current: int = 0
    total: int = 0
    message: str = ""
    cache_hit: bool = False


@dataclass(frozen=True)
class AudioVector:
    pooled: np.ndarray  # float32 [2 · stems · D]
    cache_hit: bool


def queued(kind: str, position: int) -> Event:
    return Event(Stage.STAGE_QUEUED, position, 0, f"waiting for the {NAMES[kind]} (place {position} in line)")


class FrontHalf:
    def __init__(self, downstream: Downstream, cache: AudioCache, pool: futures.ThreadPoolExecutor) -> None:
        self.downstream = downstream
        self.cache = cache
        self.pool = pool

    def audio_vector(
        self, job: Job, infos: Infos, song: DecodedAudio, sha256: str
    ) -> Generator[Event, None, AudioVector]:
        fmt = self.downstream.stem_format(infos)
        key = cache_key(
            sha256, separator=_identity(infos.separator.model), audio_encoder=_identity(infos.audio_encoder.model),
            stem_format=asdict(fmt), decoder=f"pyav-{av.__version__}",
        )
        cached = self.cache.get(key)
        if cached is not None:
            stems = len(STEM_ORDER)
            yield Event(Stage.STAGE_EMBEDDING, stems, stems, "cache hit", cache_hit=True)
            return AudioVector(np.asarray(cached.pooled, np.float32), cache_hit=True)
        yield Event(Stage.STAGE_SEPARATING, 0, round(song.seconds), f"separating {song.seconds:.1f} s into stems")
        pooled = yield from self._separate_and_embed(job, infos, fmt, song)
        self.cache.put(key, CachedAudio(pooled))
        return AudioVector(pooled, cache_hit=False)

    def _separate_and_embed(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio
    ) -> Generator[Event, None, np.ndarray]:
        events: queue.Queue[Event] = queue.Queue()
        feed: queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None] = queue.Queue(_FEED_PIECES)
        separating = self.pool.submit(self._separate, job, fmt, song, feed, events)
        embedding = self.pool.submit(self._embed, job, infos, fmt, song, feed, events)
        finished = False
        try:
            while not embedding.done() or not events.empty():
                try:
                    yield events.get(timeout=_POLL_S)
                except queue.Empty:
                    job.check()
                failure = separating.exception() if separating.done() else None
                if failure is not None:
                    raise failure  # the root cause: the encoder's error would only say its input ended early
            finished = True
            return embedding.result()
        finally:
            if not finished:  # failed or cancelled: stop both pumps and let go of the song only once they have
                job.cancel_all()
                futures.wait([separating], timeout=_JOIN_S)
                futures.wait([embedding], timeout=_JOIN_S)

    def _separate(
        self, job: Job, fmt: StemFormat, song: DecodedAudio,
        feed: queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None], events: queue.Queue[Event],
    ) -> None:
        """Pump the separator's stems into ``feed``; report seconds separated (of the first stem)."""
        total, frames, reported = round(song.seconds), 0, -1
        signal: dict[int, int] = {}  # the separator's stem index → the stem's place in STEM_ORDER
        try:
            for event in self.downstream.separate(job, song.samples, song.sample_rate, fmt, STEM_ORDER):
                if isinstance(event, Queued):
                    events.put(queued("separator", event.position))
                elif isinstance(event, StemsStarted):
                    signal = {event.stems.index(name): i for i, name in enumerate(STEM_ORDER)}
                    events.put(Event(Stage.STAGE_SEPARATING, 0, total, f"separating {song.seconds:.1f} s"))
                elif isinstance(event, StemPiece) and event.stem in signal:
                    _put(job, feed, (signal[event.stem], event.audio))
                    if signal[event.stem] == 0:
                        frames += event.frames
                        seconds = int(frames / fmt.sample_rate)
                        if seconds > reported:
                            reported = seconds
                            events.put(Event(Stage.STAGE_SEPARATING, seconds, total, "separated"))
        finally:
            _put(job, feed, None)

    def _embed(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio,
        feed: queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None], events: queue.Queue[Event],
    ) -> np.ndarray:
        """The four stems in one ``Embed``; their frames pooled as they come."""
        input_frames = max(1, round(song.frames * fmt.sample_rate / song.sample_rate))
        pool = StemPool(STEM_ORDER)
        pieces = _drain(job, feed)
        for event in self.downstream.embed(job, len(STEM_ORDER), input_frames, pieces,
                                           infos.audio_encoder.embedding_dim):
            if isinstance(event, Queued):
                events.put(queued("audio_encoder", event.position))
            elif isinstance(event, Frames):
                pool.add(event.signal, event.embeddings)
                events.put(Event(Stage.STAGE_EMBEDDING, event.done, event.total, "embedded"))
            elif isinstance(event, Embedded):
                break
        return pool.result()


def _put(job: Job, feed: queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None],
         item: tuple[int, tensor_pb2.AudioChunk] | None) -> None:
    """Hand an item to the encoder's request stream, waiting while it is full (unless the job is over)."""
    while not job.cancelled.is_set():
        try:
            feed.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _drain(job: Job, feed: queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None]
           ) -> Iterator[tuple[int, tensor_pb2.AudioChunk]]:
    while not job.cancelled.is_set():
        try:
            item = feed.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if item is None:
            return
        yield item


def _identity(model: common_pb2.ModelInfo) -> dict[str, object]:
    """The parts of a ``ModelInfo`` that change a model's output (not where it runs)."""
    return {
        "backend": model.backend, "model_id": model.model_id, "revision": model.revision,
        "dtype": model.dtype, "extra": dict(model.extra),
    }
