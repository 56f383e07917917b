"""The gRPC ``Transcriber`` service: validate, read windows as the audio arrives, answer the transcript.

``Transcribe`` takes a model slot first (answering ``queued`` with its place in line while it waits), then
reads ``TranscribeOptions`` (first request only) and the ``AudioChunk``s of one signal (any rate
1..384 kHz, 1 or 2 channels, float32/float16, at most ``max_seconds``). Each 30 s window is read as soon as
its audio is here (``stream.TranscribeStream``) and answered as ``progress`` (seconds done / total), then
one ``transcript``.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from audiomemory.runtime.audio import MAX_SAMPLE_RATE, AudioStreamReader, frames_limit
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.transcript import Transcript
from audiomemory.transcriber.backends import TranscriberBackend
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.stream import TranscribeStream
from audiomemory.v1 import common_pb2, tensor_pb2, transcriber_pb2, transcriber_pb2_grpc

SERVICE = "transcriber"
ACCEPTED_DTYPES = [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]
MAX_INPUT_CHANNELS = 2


def transcript_proto(transcript: Transcript) -> transcriber_pb2.Transcript:
    return transcriber_pb2.Transcript(
        text=transcript.text, language=transcript.language, seconds=transcript.seconds,
        segments=[transcriber_pb2.TranscriptSegment(start=s.start, end=s.end, text=s.text)
                  for s in transcript.segments],
    )


class _TranscribeCall:
    """One Transcribe call after it holds the slot: request checks, the stream, the answers."""

    def __init__(self, backend: TranscriberBackend, config: TranscriberConfig, context: grpc.ServicerContext):
        self.backend = backend
        self.config = config
        self.context = context
        self.input_frames = 0
        self.language: str | None = None
        self.reader = AudioStreamReader("requests.audio", max_seconds=config.max_seconds, keep=False)
        self.stream: TranscribeStream | None = None
        self.frames = 0  # received, at the input's rate

    def _options(self, options: transcriber_pb2.TranscribeOptions) -> None:
        if options.input_frames < 0:
            raise InvalidInput(f"requests[0].options.input_frames: expected 0 (unknown) or more, got "
                               f"{options.input_frames}")
        if len(options.language) > 16:
            raise InvalidInput(f"requests[0].options.language: a language code such as 'en', got "
                               f"{len(options.language)} characters")
        self.input_frames = options.input_frames
        self.language = options.language or None

    def add(self, i: int, request: transcriber_pb2.TranscribeRequest) -> Iterator[transcriber_pb2.TranscribeResponse]:
        if request.HasField("options"):
            if i > 0:
                raise InvalidInput(f"requests[{i}].options: expected in the first request only, got it in request {i}")
            self._options(request.options)
        if not request.HasField("audio"):
            if i == 0 and request.HasField("options"):
                return
            raise InvalidInput(f"requests[{i}].audio: missing, every request after the options carries audio")
        part = self.reader.add(request.audio)
        self.frames += part.shape[1]
        if self.stream is None:
            self.stream = TranscribeStream(self.backend, self.language, cancelled=lambda: not self.context.is_active())
        for done in self.stream.add(part, request.audio.sample_rate):
            yield self._progress(done)

    def finish(self, requests: int) -> Iterator[transcriber_pb2.TranscribeResponse]:
        if self.stream is None or self.frames == 0:
            raise InvalidInput(f"requests: no audio frames in {requests} request(s); expected the signal's audio "
                               "after the options")
        for done in self.stream.finish():
            yield self._progress(done)
        yield transcriber_pb2.TranscribeResponse(transcript=transcript_proto(self.stream.result()))

    def _progress(self, done: float) -> transcriber_pb2.TranscribeResponse:
        rate = self.reader.sample_rate
        total = self.input_frames / rate if self.input_frames and rate else 0.0
        return transcriber_pb2.TranscribeResponse(
            progress=transcriber_pb2.TranscribeProgress(seconds_done=done, seconds_total=max(total, done))
        )


class TranscriberServicer(transcriber_pb2_grpc.TranscriberServicer):
    """Thin edge: protobuf ⇄ numpy; ``stream`` windows, the backend decodes."""

    def __init__(self, backend: TranscriberBackend, gate: Gate, config: TranscriberConfig) -> None:
        self.backend = backend
        self.gate = gate
        self.config = config

    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> transcriber_pb2.TranscriberInfo:
        self.gate.check_ready()
        rate = self.backend.sample_rate
        return transcriber_pb2.TranscriberInfo(
            model=self.backend.describe().to_proto(SERVICE, package="audiomemory-transcriber"),
            sample_rate=rate, max_input_sample_rate=MAX_SAMPLE_RATE, channels=1,
            max_input_channels=MAX_INPUT_CHANNELS, accepted_dtypes=ACCEPTED_DTYPES,
            window_seconds=self.backend.window / rate, max_input_frames=frames_limit(self.config.max_seconds, rate),
        )

    def Transcribe(
        self, request_iterator: Iterator[transcriber_pb2.TranscribeRequest], context: grpc.ServicerContext
    ) -> Iterator[transcriber_pb2.TranscribeResponse]:
        self.gate.check_ready()
        # The slot first: audio is read (and held) only by a call that is running.
        with self.gate.admit(context) as turn:
            for position in turn.waiting():
                yield transcriber_pb2.TranscribeResponse(
                    queued=common_pb2.QueueStatus(position=position, running=self.gate.running_count)
                )
            call = _TranscribeCall(self.backend, self.config, context)
            count = 0
            for i, request in enumerate(request_iterator):
                count = i + 1
                yield from call.add(i, request)
            yield from call.finish(count)


def add_servicer(server: grpc.Server, backend: TranscriberBackend, gate: Gate, config: TranscriberConfig) -> None:
    transcriber_pb2_grpc.add_TranscriberServicer_to_server(TranscriberServicer(backend, gate, config), server)
