"""The front half of a job: the decoded song → its pooled audio vector ``a`` (DESIGN.md §1), and the
vocal stem's transcript when the lyrics are to be transcribed.

``FrontHalf.audio_vector(job, infos, song, sha256, transcribe, pins, report, need_bins)`` returns an
``AudioVector`` — the whole-song vector, the song's one-second bins (``timebins.Bins``, DESIGN.md §11) and the
transcript: from the cache when the same song went through the same separator and audio encoder (and
transcriber) before (an entry written before bins were kept serves a whole-song job; one that needs the bins
recomputes and rewrites it), else

    separate ──stems, block by block──▶ embed (the four stems in one call) ──frames──▶ pool
                   └──the vocal stem's pieces──▶ transcribe (concurrently) ──▶ transcript

one task each (``job.TaskGroup``), the separator's pieces handed on through bounded ``job.Channel``s as
they arrive, so a slow consumer slows the separator rather than filling memory, and the frames pooled as
they arrive (``StemPool`` for the whole-song vector, ``BinPool`` beside it for the bins): nothing here holds a
whole stem or every frame. When the vector is cached but the transcript is not, only the vocal stem is
separated, and nothing is embedded.

The cache key names the identities (``runtime.identity``) of the separator and audio encoder, and the
calls are pinned to exactly those identities: a vector is never stored under an identity that did not
make it, whichever replicas a scaled tier has. Progress goes to ``report`` (seconds separated, frames
embedded over all stems, seconds transcribed, a place in line).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import av
import numpy as np

from audiomemory.orchestrator.cache import AudioCache, CachedAudio, CachedTranscript, cache_key
from audiomemory.orchestrator.compatibility import NAMES, Infos
from audiomemory.orchestrator.decode import DecodedAudio
from audiomemory.orchestrator.job import Channel, Job, TaskGroup
from audiomemory.orchestrator.pooling import STEM_ORDER, StemPool
from audiomemory.orchestrator.stages import (
    Embedded,
    Event,
    Frames,
    Heard,
    Pin,
    Queued,
    Served,
    Stages,
    StemFormat,
    StemPiece,
    StemsStarted,
    queued,
    stem_format,
)
from audiomemory.orchestrator.timebins import BinPool, Bins, bin_count
from audiomemory.runtime import identity
from audiomemory.runtime.errors import Unavailable
from audiomemory.runtime.transcript import Transcript
from audiomemory.v1 import common_pb2, orchestrator_pb2, tensor_pb2

T = TypeVar("T")
Stage = orchestrator_pb2.Stage
Report = Callable[[Event], None]
Piece = tuple[int, tensor_pb2.AudioChunk]
_FEED_PIECES = 32  # stem pieces (≤ 1 MiB each) waiting for the audio encoder (or transcriber) at most
VOCALS = STEM_ORDER[0]
_FRONT = ("separator", "audio_encoder", "transcriber")


@dataclass(frozen=True)
class AudioVector:
    pooled: np.ndarray  # float32 [2 · stems · D], the whole song
    cache_hit: bool
    transcript: Transcript | None = None  # when asked for
    transcript_cache_hit: bool = False
    served: dict[str, Served] = field(default_factory=dict)  # who made it (from the cache: its identity)
    bins: Bins | None = None  # the song's one-second bins (None: a cache entry from before them, or no hop said)


def pins_for(infos: Infos, asked: Mapping[str, Pin]) -> dict[str, Pin]:
    """The front half's pins: what the request pins, else the identity each service's ``Describe`` gave."""
    pins = {}
    for kind in _FRONT:
        info = getattr(infos, kind)
        if kind in asked and asked[kind].identity:
            pins[kind] = asked[kind]
        elif info is not None:
            pins[kind] = common_pb2.Pin(identity=identity.identity(info.model),
                                        describe=identity.describe_model(info.model))
    return pins


class FrontHalf:
    def __init__(self, stages: Stages, cache: AudioCache) -> None:
        self.stages = stages
        self.cache = cache

    def audio_vector(
        self, job: Job, infos: Infos, song: DecodedAudio, sha256: str, transcribe: bool, pins: Mapping[str, Pin],
        report: Report, need_bins: bool = False,
    ) -> AudioVector:
        fmt = stem_format(infos)
        common = {"separator": pins["separator"].identity, "stem_format": asdict(fmt),
                  "decoder": f"pyav-{av.__version__}"}
        key = cache_key(sha256, audio_encoder=pins["audio_encoder"].identity, **common)
        words_key = cache_key(sha256, transcriber=pins["transcriber"].identity, **common) \
            if transcribe and "transcriber" in pins else None
        cached = _usable(self.cache.get(key), bin_count(song.seconds), need_bins)
        heard = self.cache.get(words_key) if words_key else None
        transcript = heard.transcript if isinstance(heard, CachedTranscript) else None
        served = {kind: _from_cache(infos, pins[kind]) for kind in ("separator", "audio_encoder")
                  if cached is not None}
        if cached is not None:
            report(Event(Stage.STAGE_EMBEDDING, len(STEM_ORDER), len(STEM_ORDER), "cache hit", cache_hit=True))
        if transcript is not None:
            served["transcriber"] = _from_cache(infos, pins["transcriber"])
            total = round(transcript.seconds)
            report(Event(Stage.STAGE_TRANSCRIBING, total, total, "cache hit: transcribed before", cache_hit=True))
        missing = words_key is not None and transcript is None
        if cached is not None and not missing:
            return AudioVector(np.asarray(cached.pooled, np.float32), True, transcript, transcript is not None,
                               served, cached.bins)
        what = "into stems" if cached is None else "for the vocal stem (the audio vector is cached)"
        report(Event(Stage.STAGE_SEPARATING, 0, round(song.seconds), f"separating {song.seconds:.1f} s {what}"))
        made, heard_now, ran = self._separate_and_consume(job, infos, fmt, song, cached is None, missing, pins,
                                                          report)
        if made is not None and _same(ran, pins, "separator", "audio_encoder"):
            self.cache.put(key, made)
        if heard_now is not None and words_key is not None and _same(ran, pins, "separator", "transcriber"):
            self.cache.put(words_key, CachedTranscript(heard_now))
        served = {**ran, **served}
        audio = cached if cached is not None else made
        assert audio is not None
        return AudioVector(np.asarray(audio.pooled, np.float32), cached is not None,
                           transcript if transcript is not None else heard_now, transcript is not None, served,
                           audio.bins)

    def _separate_and_consume(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio, embed: bool, transcribe: bool,
        pins: Mapping[str, Pin], report: Report,
    ) -> tuple[CachedAudio | None, Transcript | None, dict[str, Served]]:
        """Separate (all stems to embed, else the vocal stem alone) and feed the encoder and/or transcriber,
        one task each; the separator's failure is the root cause when a consumer's input then ends early."""
        feed: Channel[Piece] | None = Channel(job, _FEED_PIECES) if embed else None
        words: Channel[Piece] | None = Channel(job, _FEED_PIECES) if transcribe else None
        stems = STEM_ORDER if embed else (VOCALS,)
        served: dict[str, Served] = {}
        with TaskGroup(job, "front") as tasks:
            tasks.spawn(self._separate, job, fmt, song, stems, (feed, words), pins["separator"], served, report)
            embedded = tasks.spawn(self._embed, job, infos, fmt, song, feed, pins["audio_encoder"], served,
                                   report) if feed else None
            heard = tasks.spawn(self._transcribe, job, fmt, song, words, pins["transcriber"], served,
                                report) if words else None
        return (embedded() if embedded else None), (heard() if heard else None), served

    def _separate(
        self, job: Job, fmt: StemFormat, song: DecodedAudio, stems: tuple[str, ...],
        feeds: tuple[Channel[Piece] | None, Channel[Piece] | None], pin: Pin, served: dict[str, Served],
        report: Report,
    ) -> None:
        """Pump the separator's stems into the encoder's feed and the vocal stem into the transcriber's;
        report seconds separated (of the vocal stem, the first)."""
        feed, words = feeds
        total, frames, reported = round(song.seconds), 0, -1
        signal: dict[int, int] = {}  # the separator's stem index → the stem's place in ``stems``
        try:
            for event in self.stages.separate(job, song.samples, song.sample_rate, fmt, stems, pin):
                if isinstance(event, Served):
                    served["separator"] = event
                elif isinstance(event, Queued):
                    report(queued(NAMES["separator"], event.position))
                elif isinstance(event, StemsStarted):
                    signal = {event.stems.index(name): i for i, name in enumerate(stems)}
                    report(Event(Stage.STAGE_SEPARATING, 0, total, f"separating {song.seconds:.1f} s"))
                elif isinstance(event, StemPiece) and event.stem in signal:
                    if feed is not None:
                        feed.put((signal[event.stem], event.audio))
                    if signal[event.stem] == 0:  # the vocal stem
                        if words is not None:
                            words.put((0, event.audio))
                        frames += event.frames
                        seconds = int(frames / fmt.sample_rate)
                        if seconds > reported:
                            reported = seconds
                            report(Event(Stage.STAGE_SEPARATING, seconds, total, "separated"))
        finally:
            for channel in (feed, words):
                if channel is not None:
                    channel.close()

    def _embed(
        self, job: Job, infos: Infos, fmt: StemFormat, song: DecodedAudio, feed: Channel[Piece], pin: Pin,
        served: dict[str, Served], report: Report,
    ) -> CachedAudio:
        """The four stems in one ``Embed``; their frames pooled as they come: the whole-song vector (``StemPool``,
        as it always was) and, beside it, the one-second bins (``BinPool``, placed by the hop the call resolved)."""
        input_frames = max(1, round(song.frames * fmt.sample_rate / song.sample_rate))
        dim = infos.audio_encoder.embedding_dim
        pool, bins = StemPool(STEM_ORDER), None
        for event in self.stages.embed(job, len(STEM_ORDER), input_frames, _first_arrived(iter(feed)), dim, pin):
            if isinstance(event, Served):
                served["audio_encoder"] = event
                bins = bins or _bin_pool(event, fmt, song, dim)
            elif isinstance(event, Queued):
                report(queued(NAMES["audio_encoder"], event.position))
            elif isinstance(event, Frames):
                pool.add(event.signal, event.embeddings)
                if bins is not None:
                    bins.add(event.signal, event.embeddings)
                report(Event(Stage.STAGE_EMBEDDING, event.done, event.total, "embedded"))
            elif isinstance(event, Embedded):
                break
        return CachedAudio(pool.result(), bins.result() if bins is not None else None)

    def _transcribe(
        self, job: Job, fmt: StemFormat, song: DecodedAudio, words: Channel[Piece], pin: Pin,
        served: dict[str, Served], report: Report,
    ) -> Transcript:
        """The vocal stem to the transcriber as it is separated; its progress in whole seconds."""
        input_frames = max(1, round(song.frames * fmt.sample_rate / song.sample_rate))
        pieces = (chunk for _, chunk in _first_arrived(iter(words)))
        for event in self.stages.transcribe(job, input_frames, pieces, pin):
            if isinstance(event, Served):
                served["transcriber"] = event
            elif isinstance(event, Queued):
                report(queued(NAMES["transcriber"], event.position))
            elif isinstance(event, Heard):
                report(Event(Stage.STAGE_TRANSCRIBING, int(event.done), round(event.total), "transcribed"))
            elif isinstance(event, Transcript):
                return event
        raise AssertionError("the transcriber's stream ended without a transcript")  # the stage raises first


def _first_arrived(pieces: Iterator[T]) -> Iterator[T]:
    """``pieces`` once the first has arrived: a consumer's call is opened only when the separator delivers
    (the service would otherwise hold a slot waiting for audio, and end the call as stalled — its reads
    are time-limited — when the separator is busy with other jobs)."""
    first = next(pieces, None)
    if first is None:  # the separator delivered nothing: its own failure says why
        raise Unavailable("the separator delivered no stems")
    return itertools.chain((first,), pieces)


def _usable(entry: object, seconds: int, need_bins: bool) -> CachedAudio | None:
    """A cached audio entry this job can use: any for a whole-song job; one with the song's bins when the job
    needs them (an entry from before bins were kept is then a miss, recomputed and rewritten)."""
    if not isinstance(entry, CachedAudio):
        return None
    if entry.bins is not None and entry.bins.seconds != seconds:
        return None  # not this song's length: never serve it
    return entry if entry.bins is not None or not need_bins else None


def _bin_pool(header: Served, fmt: StemFormat, song: DecodedAudio, dim: int) -> BinPool | None:
    """The bins of this call's frames, from the hop its header resolved (None when it names none: an encoder
    from before; its jobs then have no bins, and a span job says so)."""
    try:
        hop = round(float(header.resolved["hop_seconds"]) * fmt.sample_rate)
    except (KeyError, ValueError):
        return None
    if hop < 1 or dim < 1:
        return None
    return BinPool(bin_count(song.seconds), hop, fmt.sample_rate, dim)


def _from_cache(infos: Infos, pin: Pin) -> Served:
    """What made a cached result: the identity its key names (with the model facts ``Describe`` gave, when
    the service answering it runs that identity)."""
    for kind in _FRONT:
        info = getattr(infos, kind)
        if info is not None and identity.identity(info.model) == pin.identity:
            return identity.served(info.model, {"cache": "hit"})
    return common_pb2.Served(identity=pin.identity, resolved={"cache": "hit", "describe": pin.describe})


def _same(served: Mapping[str, Served], pins: Mapping[str, Pin], *kinds: str) -> bool:
    """Whether the replicas that ran are the identities the cache key names (their pins made sure of it)."""
    return all(kind in served and served[kind].identity == pins[kind].identity for kind in kinds)
