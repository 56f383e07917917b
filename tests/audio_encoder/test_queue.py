"""A second caller behind a busy model slot is told its place in line, then served."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from audiomemory.audio_encoder.backends import AudioEncoderBackend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.backend import ModelInfo
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2_grpc

from .streams import Answer, collect, requests, tone


class HeldEncoder(AudioEncoderBackend):
    """A model-free backend whose every batch waits until the test releases it."""

    name = "held"
    sample_rate = 48_000
    channels = 1
    embedding_dim = 4
    window = 48_000
    hop = 24_000
    batch_size = 4

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__(config)
        self.entered = threading.Event()
        self.release = threading.Event()

    def load(self) -> None:
        pass

    def describe(self) -> ModelInfo:
        return ModelInfo(backend=self.name, model_id="held", revision="none", device="cpu", dtype="float32")

    def embed_windows(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the model")
        return np.zeros((batch.shape[0], self.embedding_dim), np.float32)


def test_second_caller_behind_a_busy_slot_hears_position_1_then_gets_its_frames(
    start_encoder: Callable[..., RunningService],
) -> None:
    backend = HeldEncoder(AudioEncoderConfig(port=0, concurrency=1))
    svc = start_encoder(backend.config, backend)
    first: dict[str, Any] = {}
    with grpc.insecure_channel(svc.address) as channel:
        stub = audio_encoder_pb2_grpc.AudioEncoderStub(channel)

        def run_first() -> None:
            first["answer"] = collect(stub.Embed(requests(tone(48000, 1, 0.4), 48000)))

        runner = threading.Thread(target=run_first)
        runner.start()
        assert backend.entered.wait(10)  # the first call holds the slot, inside the model
        second = stub.Embed(requests(tone(48000, 1, 0.4), 48000), timeout=30)
        assert next(second).WhichOneof("item") == "served"
        reply = next(second)
        assert reply.WhichOneof("item") == "queued"
        assert (reply.queued.position, reply.queued.running) == (1, 1)
        backend.release.set()
        rest = collect(second)
        runner.join(10)
    answer: Answer = first["answer"]
    for result in (answer, rest):
        assert result.end is not None and list(result.end.frames) == [1]
    assert answer.queued == [] and rest.kinds[-1] == "end"
