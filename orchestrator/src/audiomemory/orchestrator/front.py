"""The front half of a job: the decoded song → its pooled audio vector ``a`` (DESIGN.md §1), and the
vocal stem's transcript when the lyrics are to be transcribed.

``FrontHalf.audio_vector(job, infos, song, sha256, transcribe)`` is a generator of progress ``Event``s that
returns an ``AudioVector``: from the cache when the same song went through the same separator and audio
encoder (and transcriber) before, else

    separate ──stems, block by block──▶ embed (the four stems in one call) ──frames──▶ pool
                   └──the vocal stem's pieces──▶ transcribe (concurrently) ──▶ transcript

with the separator's pieces handed to the audio encoder (and the vocal ones to the transcriber) as they
arrive, through bounded queues, so a slow consumer slows the separator rather than filling memory, and the
frames pooled as they arrive (``StemPool``): nothing here holds a whole stem or every frame. When the
vector is cached but the transcript is not, only the vocal stem is separated, and nothing is embedded.
One thread pumps each call; this generator relays their progress: seconds of audio separated, frames
embedded over all stems, seconds transcribed, or a place in line while a service is busy.
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Generator, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import av
import numpy as np

from audiomemory.orchestrator.cache import AudioCache, CachedAudio, CachedTranscript, cache_key
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
from audiomemory.orchestrator.transcription import Heard
from audiomemory.runtime.errors import Unavailable
from audiomemory.runtime.transcript import Transcript
from audiomemory.v1 import common_pb2, orchestrator_pb2, tensor_pb2

T = TypeVar("T")

Stage = orchestrator_pb2.Stage
_FEED_PIECES = 32  # stem pieces (≤ 1 MiB each) waiting for the audio encoder (or transcriber) at most
_POLL_S = 0.2
_JOIN_S = 30.0  # a cancelled pump ends at its next message; this bounds a stuck one
VOCALS = STEM_ORDER[0]
Feed = queue.Queue[tuple[int, tensor_pb2.AudioChunk] | None]


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
    transcript: Transcript | None = None  # when asked for
    transcript_cache_hit: bool = False


def queued(kind: str, position: int) -> Event:
    return Event(Stage.STAGE_QUEUED, position, 0, f"waiting for the {NAMES[kind]} (place {position} in line)")


class FrontHalf:
    def __init__(self, downstream: Downstream, cache: AudioCache, pool: futures.ThreadPoolExecutor) -> None:
        self.downstream = downstream
        self.cache = cache
        self.pool = pool

    def audio_vector(
        self, job: Job, infos: Infos, song: DecodedAudio, sha256: str, transcribe: bool = False
    ) -> Generator[Event, None, AudioVector]:
        fmt = self.downstream.stem_format(infos)
        common = {"separator": _identity(infos.separator.model), "stem_format": asdict(fmt),
                  "decoder": f"pyav-{av.__version__}"}
        key = cache_key(sha256, audio_encoder=_identity(infos.audio_encoder.model), **common)
        words_key = cache_key(sha256, transcriber=_identity(infos.transcriber.model), **common) \
            if transcribe and infos.transcriber is not None else None
        cached = self.cache.get(key)
        heard = self.cache.get(words_key) if words_key else None
        pooled = cached.pooled if isinstance(cached, CachedAudio) else None
        transcript = heard.transcript if isinstance(heard, CachedTranscript) else None
        if pooled is not None:
            stems = len(STEM_ORDER)
            yield Event(Stage.STAGE_EMBEDDING, stems, stems, "cache hit", cache_hit=True)
        if transcript is not None:
            total = round(transcript.seconds)
            yield Event(Stage.STAGE_TRANSCRIBING, total, total, "cache hit: transcribed before", cache_hit=True)
        missing = words_key is not None and transcript is None
        if pooled is None or missing:
            what = "into stems" if pooled is None else "for the vocal stem (the audio vector is cached)"
            yield Event(Stage.STAGE_SEPARATING, 0, round(song.seconds), f"separating {song.seconds:.1f} s {what}")
            made, heard_now = yield from self._separate_and_consume(job, infos, fmt, song, pooled is None, missing)
            if made is not None:
                self.cache.put(key, CachedAudio(made))
            if heard_now is not None and words_key is not None:
                self.cache.put(words_key, CachedTranscript(heard_now))
            return AudioVector(pooled if pooled is not None else np.asarray(made, np.float32), pooled is not None,
                               transcript if transcript is not None else heard_now, transcript is not None)
        return AudioVector(np.asarray(pooled, np.float32), cache_hit=True, transcript=transcript,
                           transcript_cache_hit=transcript is not None)

    def _separate_and_consume(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio, embed: bool, transcribe: bool
    ) -> Generator[Event, None, tuple[np.ndarray | None, Transcript | None]]:
        """Separate (all stems to embed, else the vocal stem alone) and feed the encoder and/or transcriber."""
        events: queue.Queue[Event] = queue.Queue()
        feed: Feed | None = queue.Queue(_FEED_PIECES) if embed else None
        words: Feed | None = queue.Queue(_FEED_PIECES) if transcribe else None
        stems = STEM_ORDER if embed else (VOCALS,)
        separating = self.pool.submit(self._separate, job, fmt, song, stems, (feed, words), events)
        embedding = self.pool.submit(self._embed, job, infos, fmt, song, feed, events) if feed else None
        hearing = self.pool.submit(self._transcribe, job, fmt, song, words, events) if words else None
        consumers = [f for f in (embedding, hearing) if f is not None]
        finished = False
        try:
            while not all(f.done() for f in consumers) or not events.empty():
                try:
                    yield events.get(timeout=_POLL_S)
                except queue.Empty:
                    job.check()
                # The separator's failure is the root cause: a consumer's would only say its input ended early.
                for future in (separating, *consumers):
                    failure = future.exception() if future.done() else None
                    if failure is not None:
                        raise failure
            finished = True
            return (embedding.result() if embedding else None), (hearing.result() if hearing else None)
        finally:
            if not finished:  # failed or cancelled: stop the pumps and let go of the song only once they have
                job.cancel_all()
                pumps: list[futures.Future[Any]] = [separating, *consumers]
                futures.wait(pumps, timeout=_JOIN_S)

    def _separate(
        self, job: Job, fmt: StemFormat, song: DecodedAudio, stems: tuple[str, ...],
        feeds: tuple[Feed | None, Feed | None], events: queue.Queue[Event],
    ) -> None:
        """Pump the separator's stems into the encoder's feed and the vocal stem into the transcriber's;
        report seconds separated (of the vocal stem, the first)."""
        feed, words = feeds
        total, frames, reported = round(song.seconds), 0, -1
        signal: dict[int, int] = {}  # the separator's stem index → the stem's place in ``stems``
        try:
            for event in self.downstream.separate(job, song.samples, song.sample_rate, fmt, stems):
                if isinstance(event, Queued):
                    events.put(queued("separator", event.position))
                elif isinstance(event, StemsStarted):
                    signal = {event.stems.index(name): i for i, name in enumerate(stems)}
                    events.put(Event(Stage.STAGE_SEPARATING, 0, total, f"separating {song.seconds:.1f} s"))
                elif isinstance(event, StemPiece) and event.stem in signal:
                    if feed is not None:
                        _put(job, feed, (signal[event.stem], event.audio))
                    if signal[event.stem] == 0:  # the vocal stem
                        if words is not None:
                            _put(job, words, (0, event.audio))
                        frames += event.frames
                        seconds = int(frames / fmt.sample_rate)
                        if seconds > reported:
                            reported = seconds
                            events.put(Event(Stage.STAGE_SEPARATING, seconds, total, "separated"))
        finally:
            for queue_ in (feed, words):
                if queue_ is not None:
                    _put(job, queue_, None)

    def _embed(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio, feed: Feed, events: queue.Queue[Event],
    ) -> np.ndarray:
        """The four stems in one ``Embed``; their frames pooled as they come."""
        input_frames = max(1, round(song.frames * fmt.sample_rate / song.sample_rate))
        pool = StemPool(STEM_ORDER)
        pieces = _first_arrived(_drain(job, feed))
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

    def _transcribe(
        self, job: Job, fmt: StemFormat, song: DecodedAudio, words: Feed, events: queue.Queue[Event],
    ) -> Transcript:
        """The vocal stem to the transcriber as it is separated; its progress in whole seconds."""
        input_frames = max(1, round(song.frames * fmt.sample_rate / song.sample_rate))
        pieces = (chunk for _, chunk in _first_arrived(_drain(job, words)))
        for event in self.downstream.transcribe(job, input_frames, pieces):
            if isinstance(event, Queued):
                events.put(queued("transcriber", event.position))
            elif isinstance(event, Heard):
                events.put(Event(Stage.STAGE_TRANSCRIBING, int(event.done), round(event.total), "transcribed"))
            elif isinstance(event, Transcript):
                return event
        raise AssertionError("the transcriber's stream ended without a transcript")  # downstream raises first


def _put(job: Job, feed: Feed, item: tuple[int, tensor_pb2.AudioChunk] | None) -> None:
    """Hand an item to a consumer's request stream, waiting while it is full (unless the job is over)."""
    while not job.cancelled.is_set():
        try:
            feed.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _drain(job: Job, feed: Feed) -> Iterator[tuple[int, tensor_pb2.AudioChunk]]:
    while not job.cancelled.is_set():
        try:
            item = feed.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if item is None:
            return
        yield item


def _first_arrived(pieces: Iterator[T]) -> Iterator[T]:
    """``pieces`` once the first has arrived: a consumer's call is opened only when the separator delivers
    (the service would otherwise hold a slot waiting for audio, and end the call as stalled — its reads
    are time-limited — when the separator is busy with other jobs)."""
    first = next(pieces, None)
    if first is None:  # the separator delivered nothing: its own failure says why
        raise Unavailable("the separator delivered no stems")
    return itertools.chain((first,), pieces)


def _identity(model: common_pb2.ModelInfo) -> dict[str, object]:
    """The parts of a ``ModelInfo`` that change a model's output (not where it runs)."""
    return {
        "backend": model.backend, "model_id": model.model_id, "revision": model.revision,
        "dtype": model.dtype, "extra": dict(model.extra),
    }
