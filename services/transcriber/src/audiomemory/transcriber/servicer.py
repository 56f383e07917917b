"""The gRPC ``Transcriber`` service: validate, read windows as the audio arrives, answer the transcript.

``Transcribe`` reads its first message (the optional ``TranscribeOptions``, whose pin it checks), opens as every
model call does (``runtime.servicer``: the ``Served`` header with the language setting and the model's rate,
then ``queued`` with its place in line while it waits for a model slot); then reads the ``AudioChunk``s of
one signal (any rate 1..384 kHz, 1 or 2 channels, float32/float16, at most ``max_seconds``). Each 30 s window
is read as soon as its audio is here (``stream.TranscribeStream``) and answered as ``progress`` (seconds done /
total), then one ``transcript``.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from audiomemory.runtime.audio import (
    ACCEPTED_AUDIO_DTYPES,
    MAX_SAMPLE_RATE,
    WIRE_CHANNELS,
    AudioStreamReader,
    frames_limit,
)
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.servicer import ModelServicer, OptionsFirst
from audiomemory.runtime.transcript import Transcript
from audiomemory.transcriber.backends import TranscriberBackend
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.stream import TranscribeStream
from audiomemory.v1 import common_pb2, transcriber_pb2, transcriber_pb2_grpc

SERVICE = "transcriber"


def transcript_proto(transcript: Transcript) -> transcriber_pb2.Transcript:
    return transcriber_pb2.Transcript(
        text=transcript.text, language=transcript.language, seconds=transcript.seconds,
        segments=[transcriber_pb2.TranscriptSegment(start=s.start, end=s.end, text=s.text)
                  for s in transcript.segments],
    )


class _TranscribeCall:
    """One Transcribe call from its options on: request checks, the stream (once it holds the slot), the answers."""

    def __init__(self, servicer: TranscriberServicer, options: transcriber_pb2.TranscribeOptions,
                 context: grpc.ServicerContext) -> None:
        self.backend = servicer.backend
        self.context = context
        if options.input_frames < 0:
            raise InvalidInput(f"requests[0].options.input_frames: expected 0 (unknown) or more, got "
                               f"{options.input_frames}")
        if len(options.language) > 16:
            raise InvalidInput(f"requests[0].options.language: a language code such as 'en', got "
                               f"{len(options.language)} characters")
        self.input_frames = options.input_frames
        self.language = options.language or None
        self.reader = AudioStreamReader("requests.audio", max_seconds=servicer.config.max_seconds, keep=False)
        self.stream: TranscribeStream | None = None
        self.frames = 0  # received, at the input's rate

    def resolved(self) -> dict[str, object]:
        # The language asked, else the service's setting; "" = detected per window.
        return {"language": self.language or self.backend.config.language or "",
                "sample_rate": self.backend.sample_rate}

    def run(self, requests: OptionsFirst[transcriber_pb2.TranscribeRequest]
            ) -> Iterator[transcriber_pb2.TranscribeResponse]:
        """Holding the slot: read windows as the audio arrives, answer progress, then the transcript."""
        context = self.context
        for _, request in requests.audio():
            part = self.reader.add(request.audio)
            self.frames += part.shape[1]
            if self.stream is None:
                self.stream = TranscribeStream(self.backend, self.language, cancelled=lambda: not context.is_active())
            for done in self.stream.add(part, request.audio.sample_rate):
                yield self._progress(done)
        yield from self.finish(requests.count)

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


class TranscriberServicer(
    ModelServicer[TranscriberBackend, TranscriberConfig], transcriber_pb2_grpc.TranscriberServicer
):
    """Thin edge: protobuf ⇄ numpy; ``stream`` windows, the backend decodes."""

    kind = SERVICE
    package = "audiomemory-transcriber"

    def info(self, model: common_pb2.ModelInfo) -> transcriber_pb2.TranscriberInfo:
        rate = self.backend.sample_rate
        return transcriber_pb2.TranscriberInfo(
            model=model, sample_rate=rate, max_input_sample_rate=MAX_SAMPLE_RATE, channels=1,
            max_input_channels=max(WIRE_CHANNELS), accepted_dtypes=ACCEPTED_AUDIO_DTYPES,
            window_seconds=self.backend.window / rate, max_input_frames=frames_limit(self.config.max_seconds, rate),
        )

    def Transcribe(
        self, request_iterator: Iterator[transcriber_pb2.TranscribeRequest], context: grpc.ServicerContext
    ) -> Iterator[transcriber_pb2.TranscribeResponse]:
        return self.serve_stream(context, request_iterator, transcriber_pb2.TranscribeOptions(),
                                 lambda options: _TranscribeCall(self, options, context),
                                 transcriber_pb2.TranscribeResponse)


def add_servicer(server: grpc.Server, backend: TranscriberBackend, gate: Gate, config: TranscriberConfig) -> None:
    transcriber_pb2_grpc.add_TranscriberServicer_to_server(TranscriberServicer(backend, gate, config), server)
