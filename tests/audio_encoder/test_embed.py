"""Embed over real gRPC with random-weight OpenL3: shapes, timestamps, format handling, Describe."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiomemory.audio_encoder.backends.openl3 import frame_count
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2_grpc, common_pb2, tensor_pb2

from .conftest import HOP
from .streams import collect, requests, tone


# At hop 0.5 s: T = 1 + ceil((seconds + 0.5 − 1) / 0.5), at least 1 (0.3 s → 1, 0.8 s → 2, 1.3 s → 3).
@pytest.mark.parametrize(
    ("rate", "channels", "seconds", "expected"),
    [(22050, 1, 0.3, 1), (22050, 2, 0.8, 2), (44100, 1, 0.8, 2), (44100, 2, 0.3, 1), (48000, 1, 1.3, 3),
     (48000, 2, 0.3, 1)],
)
def test_embeddings_have_one_row_per_hop_with_centre_timestamps(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, rate: int, channels: int, seconds: float, expected: int
) -> None:
    header, timestamps, embeddings = collect(stub.Embed(requests(tone(rate, channels, seconds), rate)))
    assert (header.frames, header.embedding_dim) == (expected, 512)
    assert embeddings.shape == (expected, 512) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(timestamps, np.arange(expected) * HOP)
    assert np.isfinite(embeddings).all()


def test_stereo_is_embedded_as_its_mono_mix(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    stereo = tone(48000, 2, 0.4)
    _, _, from_stereo = collect(stub.Embed(requests(stereo, 48000)))
    _, _, from_mono = collect(stub.Embed(requests(stereo.mean(axis=0, keepdims=True), 48000)))
    np.testing.assert_allclose(from_stereo, from_mono, rtol=1e-5, atol=1e-4)


def test_different_audio_gives_different_embeddings(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    _, _, a = collect(stub.Embed(requests(tone(48000, 1, 0.4, seed=1), 48000)))
    _, _, b = collect(stub.Embed(requests(np.zeros((1, 19200), np.float32), 48000)))
    assert np.abs(a - b).max() > 1e-3


def test_float16_audio_is_accepted_and_embeds_close_to_float32(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    audio = tone(48000, 1, 0.4, seed=2)
    _, _, as32 = collect(stub.Embed(requests(audio, 48000)))
    _, _, as16 = collect(stub.Embed(requests(audio, 48000, dtype="float16", chunk_bytes=4096)))
    np.testing.assert_allclose(as16, as32, rtol=0.02, atol=0.02 * np.abs(as32).max())


@pytest.mark.parametrize("frames", [1, 12000])
def test_silence_and_clips_shorter_than_a_window_give_one_finite_frame_at_zero(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, frames: int
) -> None:
    header, timestamps, embeddings = collect(stub.Embed(requests(np.zeros((1, frames), np.float32), 48000)))
    assert header.frames == 1 and timestamps.tolist() == [0.0]
    assert np.isfinite(embeddings).all()


def test_describe_reports_the_loaded_model(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, tiny_encoder: dict[str, Any]
) -> None:
    info = stub.Describe(common_pb2.DescribeRequest())
    assert (info.sample_rate, info.channels, info.embedding_dim) == (48000, 1, 512)
    assert (info.hop_seconds, info.window_seconds) == (HOP, 1.0)
    assert list(info.accepted_dtypes) == [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]
    assert info.max_input_frames == 1200 * 48000
    weights = Path(tiny_encoder["weights_dir"]) / "hub" / "checkpoints" / "torchopenl3_mel256_music_512.pth.tar"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    model = info.model
    assert (model.service, model.backend, model.model_id) == ("audio_encoder", "openl3", "openl3-music-mel256-512")
    assert model.revision == f"sha256:{digest[:16]}" and model.extra["weights_sha256"] == digest
    assert model.extra["content_type"] == "music" and model.extra["input_repr"] == "mel256"


@pytest.mark.parametrize(
    ("samples", "hop", "expected"),
    [
        (0, 4800, 1),
        (24000, 4800, 1),              # exactly half a window: the centred window still holds it all
        (24001, 4800, 2),
        (48000, 4800, 6),              # 1 s at hop 0.1 → centres 0.0 … 0.5 s
        (48000 * 10, 4800, 96),        # 10 s → centres 0.0 … 9.5 s
        (48000 * 1200, 4800, 11996),   # 20 min → centres 0.0 … 1199.5 s
    ],
)
def test_frame_count_follows_the_documented_centre_rule(samples: int, hop: int, expected: int) -> None:
    assert frame_count(samples, hop) == expected


def test_server_still_serves_after_the_embedding_tests(encoder: RunningService) -> None:
    assert encoder.gate.ready.is_set() and encoder.gate.load_error is None
