"""The stages a job calls, as one small interface with two adapters (docs/DESIGN.md §1).

``Stages`` is what the job (``pipeline.py``) is written against: ``describe`` and the five model calls,
each a stream of typed events that opens with the ``Served`` header of whoever served it (the replica's
identity and what it resolved) and may carry a ``Pin`` (the identity the call needs); the generator's may
paint a batch (``Painting.seeds``, at most ``max_batch(infos)`` items, one ``Painted`` each). Two adapters
implement it: ``downstream.Downstream`` over gRPC (the services), and ``audiomemory.bench.inprocess`` with
the backends loaded in this process — so the in-process ⇄ services comparison runs the same job code.

The events are plain data; the audio travels between the separator and its consumers as the wire's
``AudioChunk`` (in the stem format: the audio encoder's rate and channels, float16 when it accepts it) on
both adapters, so both compute the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from audiomemory.runtime.transcript import Transcript
from audiomemory.v1 import common_pb2, orchestrator_pb2, tensor_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.compatibility import Infos
    from audiomemory.orchestrator.job import Job

Served = common_pb2.Served
Pin = common_pb2.Pin


@dataclass(frozen=True)
class Event:
    """Progress of a job, for the caller (the servicer sends it as a ``StageEvent``)."""

    stage: orchestrator_pb2.Stage.ValueType
    current: int = 0
    total: int = 0
    message: str = ""
    cache_hit: bool = False


def queued(name: str, position: int) -> Event:
    """A service's place in line, as the job's progress."""
    return Event(orchestrator_pb2.STAGE_QUEUED, position, 0, f"waiting for the {name} (place {position} in line)")


@dataclass(frozen=True)
class StemFormat:
    """The format the separator delivers stems in: the audio encoder's own (rate, channels), float16 on
    the wire when it (and the transcriber) accepts it."""

    sample_rate: int
    channels: int
    dtype: str  # "float16" | "float32"


@dataclass(frozen=True)
class Queued:
    """A service's reply while the call waits for its model: its place in line (1 = next)."""

    position: int


@dataclass(frozen=True)
class StemsStarted:
    stems: tuple[str, ...]
    frames: int  # per stem, at the stem format's rate


@dataclass(frozen=True)
class StemPiece:
    stem: int  # index into StemsStarted.stems
    frames: int
    audio: tensor_pb2.AudioChunk  # passed on to the audio encoder (and transcriber) as it came


@dataclass(frozen=True)
class Frames:
    signal: int
    embeddings: np.ndarray  # [n, D] float32, the signal's next frames
    done: int  # frames embedded so far, all signals
    total: int  # all signals (0 = unknown)


@dataclass(frozen=True)
class Embedded:
    frames: tuple[int, ...]  # T per signal


@dataclass(frozen=True)
class Heard:
    """The transcriber's progress: seconds of the stem done (of ``total``, 0 = unknown)."""

    done: float
    total: float


@dataclass(frozen=True)
class Encoded:
    embeddings: np.ndarray  # [B, L, D] float32
    truncated: tuple[bool, ...]


@dataclass(frozen=True)
class Painting:
    """What the generator is asked to paint (0 / None = its default).

    One image: ``prompt_embeds`` and ``negative_prompt_embeds`` ``[1, L, D]``, painted with ``seed``, ``seeds``
    empty. A batch (one generator call, ``Stages.max_batch`` items at most): ``seeds`` one per item (``seed``
    unused), ``prompt_embeds`` ``[B, L, D]`` (row i painted with ``seeds[i]``), ``negative_prompt_embeds``
    ``[1, L, D]`` shared by the batch (or ``[B, L, D]``); item i is the image the same prompt and seed paint
    alone."""

    prompt_embeds: np.ndarray
    negative_prompt_embeds: np.ndarray
    seed: int
    steps: int
    guidance: float | None
    width: int
    height: int
    scheduler: str
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    attempt: int  # 1, or the whole call again after a replica was lost mid-stream
    attempts: int = 1  # at most


@dataclass(frozen=True)
class Painted:
    png: bytes
    width: int
    height: int
    scheduler: str
    index: int = 0  # the batch's item (0 for one image); a batch's images come in order


class Stages(Protocol):
    """What a job calls. Every stream opens with ``Served``; a non-empty ``pin`` is honoured or refused."""

    def describe(self, job: Job) -> Infos: ...

    def separate(
        self, job: Job, audio: np.ndarray, sample_rate: int, fmt: StemFormat, stems: tuple[str, ...], pin: Pin,
    ) -> Iterator[Served | Queued | StemsStarted | StemPiece]: ...

    def embed(
        self, job: Job, signals: int, input_frames: int, pieces: Iterator[tuple[int, tensor_pb2.AudioChunk]],
        dim: int, pin: Pin,
    ) -> Iterator[Served | Queued | Frames | Embedded]: ...

    def transcribe(
        self, job: Job, input_frames: int, pieces: Iterator[tensor_pb2.AudioChunk], pin: Pin,
    ) -> Iterator[Served | Queued | Heard | Transcript]: ...

    def encode(self, job: Job, texts: list[str], dims: tuple[int, int], pin: Pin) -> Iterator[Served | Encoded]: ...

    def generate(self, job: Job, painting: Painting, pin: Pin) -> Iterator[Served | Queued | Step | Painted]:
        """``Served``, places in line, a ``Step`` per denoising step (of the whole batch), then one ``Painted``
        per item, in order."""
        ...

    def max_batch(self, infos: Infos) -> int:
        """The most items one ``generate`` call may carry (``Painting.seeds``) through this adapter."""
        ...


def stem_format(infos: Infos) -> StemFormat:
    """The stems' format: the audio encoder's rate and channels; float16 when every consumer accepts it."""
    enc = infos.audio_encoder
    half = tensor_pb2.DTYPE_FLOAT16 in enc.accepted_dtypes and (
        infos.transcriber is None or tensor_pb2.DTYPE_FLOAT16 in infos.transcriber.accepted_dtypes)
    return StemFormat(enc.sample_rate, enc.channels, "float16" if half else "float32")
