"""A job's song file: its bytes (capped), their SHA-256, and room for the decoded song in the job budget.

``receive`` reads the ``file_chunk`` messages after the options. The bytes are probed as they double
(from 256 KiB): a file that declares more than ``max_seconds``, or a rate over ``max_sample_rate``, is
refused while it is still coming. Once the whole file is there the job waits (``STAGE_QUEUED``,
"waiting for memory") for room in ``max_audio_bytes`` for what its header declares at the rate it will
be decoded to (at most 48 kHz: ``decode.py``), or ``max_seconds`` of it when it declares no length — not
before: a caller uploading slowly holds no room while it does (the whole header is read then, too: a
partial file's length is only FFmpeg's estimate from the bytes so far). Decoding counts what it produces
against that room (``Upload.grow`` asks for more, up to ``max_seconds``, when a header understated the
length and the budget has room; else the job stops with RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.decode import MAX_DECODED_RATE, check_declared_length, delivered_rate, reserve_frames
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.pipeline import Upload
from audiomemory.orchestrator.stages import Event
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.gate import Gate, Turn
from audiomemory.v1 import orchestrator_pb2

Stage = orchestrator_pb2.Stage
PROBE_BYTES = 256 * 1024  # the first look at an upload's length; then at every doubling
MB = 1_000_000
FLOAT32 = 4


class _Room:
    """Room for ``frames`` decoded frames at up to ``channels`` as float32, growable up to ``max_frames``."""

    def __init__(self, turn: Turn, frames: int, channels: int, max_frames: int) -> None:
        self.turn = turn
        self.frames = frames
        self.channels = channels
        self.max_frames = max_frames

    def grow(self, frames: int) -> bool:
        """Room for ``frames`` (never past ``max_seconds``), if the budget has it now."""
        frames = min(frames, self.max_frames)
        if frames > self.frames and self.turn.grow(frames * self.channels * FLOAT32):
            self.frames = frames
            return True
        return False


def receive(
    config: OrchestratorConfig, memory: Gate, job: Job,
    requests: Iterator[orchestrator_pb2.CreateImageRequest | orchestrator_pb2.CreateReelRequest],
    filename: str, held: contextlib.ExitStack, report: Callable[[Event], None],
) -> Upload:
    """Read the file (capped at ``max_upload_bytes``), taking room for it as soon as its format is known."""
    limit = config.max_upload_bytes
    buf = bytearray()
    digest = hashlib.sha256()
    probe_at = PROBE_BYTES
    for i, req in enumerate(requests, start=1):
        if req.WhichOneof("item") != "file_chunk":
            raise InvalidInput(f"requests[{i}]: options come only once, first; then file_chunk messages")
        if len(buf) + len(req.file_chunk) > limit:
            raise ResourceExhausted(f"file: more than the upload limit of {limit} bytes")
        buf += req.file_chunk
        digest.update(req.file_chunk)
        if len(buf) >= probe_at:
            probe_at *= 2
            check_declared_length(buf, filename=filename, max_seconds=config.max_seconds,
                                  max_sample_rate=config.max_sample_rate)
    seen = check_declared_length(buf, filename=filename, max_seconds=config.max_seconds,
                                 max_sample_rate=config.max_sample_rate)
    rate, channels = (seen.sample_rate, seen.channels) if seen is not None else (MAX_DECODED_RATE, 2)
    frames = reserve_frames(seen.declared_seconds if seen is not None else None, rate, config.max_seconds)
    turn = _room(config, memory, job, held, frames * channels * FLOAT32, report)
    job.check()
    room = _Room(turn, frames, channels, int(config.max_seconds * delivered_rate(rate)) + 1)
    return Upload(buf, digest.hexdigest(), turn, frames, room.grow)  # the bytearray, not a copy


def _room(
    config: OrchestratorConfig, memory: Gate, job: Job, held: contextlib.ExitStack, weight: int,
    report: Callable[[Event], None],
) -> Turn:
    """Wait for ``weight`` bytes of room; ``Turn.resize`` gives back what the decoded song does not need,
    and all of it once the audio vector is made; what is left goes back when the job ends."""
    room = held.enter_context(memory.admit(job.context, weight))
    for position in room.waiting():
        report(Event(Stage.STAGE_QUEUED, position, 0, (
            f"waiting for memory: {memory.used / MB:.0f} of max_audio_bytes "
            f"{config.max_audio_bytes / MB:.0f} MB of decoded audio in flight (place {position} in line)")))
    return room
