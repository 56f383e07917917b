"""Embed over real gRPC with random-weight OpenL3: streamed = one-shot, progress, shapes, Describe."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest

from audiomemory.audio_encoder.backends import AudioEncoderBackend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2, tensor_pb2

from .conftest import HOP
from .streams import collect, interleaved, requests, tone


def test_interleaved_signals_stream_the_one_shot_embeddings_with_progress_up_to_the_total(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, encoder: RunningService
) -> None:
    # Three "stems" of 0.8 s (2 frames each at hop 0.5): one needs resampling and is stereo.
    signals = [(tone(44100, 2, 0.8, seed=1), 44100), (tone(48000, 1, 0.8, seed=2), 48000),
               (tone(22050, 1, 0.8, seed=3), 22050)]
    options = audio_encoder_pb2.EmbedOptions(signals=3, input_frames=38400, timestamps=True)
    answer = collect(stub.Embed(interleaved(signals, [5000, 13_000, 777], options)))
    backend = cast(AudioEncoderBackend, encoder.backend)
    assert answer.end is not None and list(answer.end.frames) == [2, 2, 2] and answer.end.embedding_dim == 512
    for index, (audio, rate) in enumerate(signals):
        one_shot, timestamps = backend.embed(audio, rate)
        np.testing.assert_allclose(answer.embeddings[index], one_shot, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(answer.timestamps[index], timestamps)
        np.testing.assert_array_equal(timestamps, [0.0, HOP])
    done = [d for d, _ in answer.progress]
    assert done == sorted(done) and done[-1] == 6
    assert {t for _, t in answer.progress} == {6}
    assert answer.kinds[-1] == "end" and "queued" not in answer.kinds  # a free slot: no waiting


# At hop 0.5 s: T = 1 + ceil((seconds + 0.5 − 1) / 0.5), at least 1 (0.3 s → 1, 0.8 s → 2, 1.3 s → 3).
@pytest.mark.parametrize(("rate", "channels", "seconds", "expected"), [(22050, 2, 0.3, 1), (48000, 1, 1.3, 3)])
def test_one_signal_without_options_gives_one_row_per_hop_and_no_progress_total(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, rate: int, channels: int, seconds: float, expected: int
) -> None:
    answer = collect(stub.Embed(requests(tone(rate, channels, seconds), rate)))
    assert answer.end is not None and list(answer.end.frames) == [expected]
    assert answer.embeddings[0].shape == (expected, 512) and answer.timestamps == {}
    assert answer.progress[-1] == (expected, 0)


def test_stereo_is_embedded_as_its_mono_mix(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    stereo = tone(48000, 2, 0.4)
    from_stereo = collect(stub.Embed(requests(stereo, 48000))).embeddings[0]
    from_mono = collect(stub.Embed(requests(stereo.mean(axis=0, keepdims=True), 48000))).embeddings[0]
    np.testing.assert_allclose(from_stereo, from_mono, rtol=1e-5, atol=1e-4)


def test_float16_audio_is_accepted_and_embeds_close_to_float32(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    audio = tone(48000, 1, 0.4, seed=2)
    as32 = collect(stub.Embed(requests(audio, 48000))).embeddings[0]
    as16 = collect(stub.Embed(requests(audio, 48000, dtype="float16", chunk_bytes=4096))).embeddings[0]
    assert np.abs(as32 - as16).max() > 0  # really a different input
    np.testing.assert_allclose(as16, as32, rtol=0.02, atol=0.02 * np.abs(as32).max())


@pytest.mark.parametrize("frames", [1, 12000])
def test_silence_and_clips_shorter_than_a_window_give_one_finite_frame_at_zero(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, frames: int
) -> None:
    options = audio_encoder_pb2.EmbedOptions(timestamps=True)
    answer = collect(stub.Embed(interleaved([(np.zeros((1, frames), np.float32), 48000)], [frames], options)))
    assert answer.embeddings[0].shape == (1, 512) and answer.timestamps[0].tolist() == [0.0]


def test_describe_reports_the_loaded_model_its_precision_and_limits(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub, tiny_encoder: dict[str, Any], encoder: RunningService
) -> None:
    info = stub.Describe(common_pb2.DescribeRequest())
    assert (info.sample_rate, info.channels, info.embedding_dim) == (48000, 1, 512)
    assert (info.hop_seconds, info.window_seconds) == (HOP, 1.0)
    assert list(info.accepted_dtypes) == [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]
    assert (info.max_input_frames, info.max_signals) == (1200 * 48000, 8)
    weights = Path(tiny_encoder["weights_dir"]) / "hub" / "checkpoints" / "torchopenl3_mel128_music_512.pth.tar"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    model = info.model
    assert (model.service, model.backend, model.model_id) == ("audio_encoder", "openl3", "openl3-music-mel128-512")
    assert model.revision == f"sha256:{digest[:16]}" and model.extra["weights_sha256"] == digest
    assert model.extra["content_type"] == "music" and model.extra["input_repr"] == "mel128"
    # The precision and hop are part of the identity (the orchestrator's cache key).
    precision = encoder.backend.precision  # type: ignore[attr-defined]
    assert precision in ("float32", "bfloat16", "int8")
    assert model.dtype == model.extra["precision"] == precision
    assert model.extra["hop_seconds"] == f"{HOP:g}"


def test_server_still_serves_after_the_embedding_tests(encoder: RunningService) -> None:
    assert encoder.gate.ready.is_set() and encoder.gate.load_error is None


def test_a_long_signal_is_framed_at_the_grown_hop_when_its_length_is_announced(
    start_encoder: Any, tiny_encoder: dict[str, Any]
) -> None:
    # hop 0.5 s up to 2 s, then 0.5 × sqrt(seconds / 2): an 8-s signal every 1.0 s (9 frames), not 0.5 s (16).
    config = AudioEncoderConfig(port=0, hop_seconds=0.5, hop_growth_seconds=2, max_hop_seconds=2,
                                precision="float32", **tiny_encoder)
    service = start_encoder(config)
    audio = tone(48000, 1, 8.0, seed=5)
    options = audio_encoder_pb2.EmbedOptions(signals=1, input_frames=8 * 48000, timestamps=True)
    with grpc.insecure_channel(service.address) as channel:
        stub = audio_encoder_pb2_grpc.AudioEncoderStub(channel)
        grown = collect(stub.Embed(interleaved([(audio, 48000)], [48000], options)))
        unannounced = collect(stub.Embed(requests(audio, 48000)))
        info = stub.Describe(common_pb2.DescribeRequest())
    assert grown.end is not None and list(grown.end.frames) == [9]
    np.testing.assert_array_equal(grown.timestamps[0], np.arange(9) * 1.0)
    assert grown.progress[-1] == (9, 9)
    one_shot, stamps = cast(AudioEncoderBackend, service.backend).embed(audio, 48000)  # same rule, same frames
    np.testing.assert_allclose(grown.embeddings[0], one_shot, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(stamps, grown.timestamps[0])
    assert unannounced.end is not None and list(unannounced.end.frames) == [16]
    assert info.hop_seconds == 0.5 and "sqrt(seconds / 2)" in info.model.extra["hop_rule"]
