"""The transcriber's call: the vocal stem in, as the separator delivers it, a ``Transcript`` out.

``transcribe(job, stub, stream, input_frames, pieces)`` is ``Downstream.transcribe``'s body: it sends the
stem's ``AudioChunk``s as they come (the same pieces the audio encoder gets, in the encoder's format) and
turns the replies into ``Queued`` (its place in line), ``Heard`` (seconds transcribed of the total) and,
last, the ``Transcript``; a reply out of order fails the job naming the transcriber.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from audiomemory.orchestrator.job import Job
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.runtime.transcript import Segment, Transcript
from audiomemory.v1 import tensor_pb2, transcriber_pb2, transcriber_pb2_grpc


@dataclass(frozen=True)
class Heard:
    """The transcriber's progress: seconds of the stem done (of ``total``, 0 = unknown)."""

    done: float
    total: float


def transcript_of(msg: transcriber_pb2.Transcript) -> Transcript:
    return Transcript(msg.text, msg.language, tuple(Segment(s.start, s.end, s.text) for s in msg.segments),
                      msg.seconds)


def transcribe(
    job: Job, stub: transcriber_pb2_grpc.TranscriberStub, stream: Callable[[Any], Iterator[Any]],
    input_frames: int, pieces: Iterator[tensor_pb2.AudioChunk],
) -> Iterator[Any]:
    """``Queued`` | ``Heard`` …, then one ``Transcript`` (see the module docstring)."""
    from audiomemory.orchestrator.downstream import Queued

    def requests() -> Iterator[transcriber_pb2.TranscribeRequest]:
        yield transcriber_pb2.TranscribeRequest(options=transcriber_pb2.TranscribeOptions(input_frames=input_frames))
        for chunk in pieces:
            yield transcriber_pb2.TranscribeRequest(audio=chunk)

    call = stub.Transcribe(requests(), timeout=job.timeout(), metadata=job.metadata)
    transcript: Transcript | None = None
    for reply in stream(call):
        item = reply.WhichOneof("item")
        if item == "queued":
            yield Queued(reply.queued.position)
        elif item == "progress" and transcript is None:
            yield Heard(reply.progress.seconds_done, reply.progress.seconds_total)
        elif item == "transcript" and transcript is None:
            transcript = transcript_of(reply.transcript)
        else:
            raise AudioMemoryError(f"the transcriber sent an unexpected {item or 'empty'} message")
    if transcript is None:
        raise AudioMemoryError("the transcriber's stream ended without its transcript")
    yield transcript
