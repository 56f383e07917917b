"""Compatibility of the model services from their Describe answers, and downstream error mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from audiomemory.orchestrator.compatibility import Infos, check_compatibility, rpc_error
from audiomemory.orchestrator.fusion import Projection, ReferenceStats
from audiomemory.runtime.errors import Cancelled, DeadlineExceeded, FailedPrecondition, InvalidInput, Unavailable
from audiomemory.v1 import (
    audio_encoder_pb2,
    common_pb2,
    generator_pb2,
    separator_pb2,
    text_encoder_pb2,
)


def _infos(**changes: Any) -> Infos:
    def model(name: str) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(backend=name, model_id=f"{name}-model")

    infos = {
        "separator": separator_pb2.SeparatorInfo(
            model=model("demucs"), stems=["drums", "bass", "other", "vocals"], sample_rate=44100, channels=2
        ),
        "audio_encoder": audio_encoder_pb2.AudioEncoderInfo(
            model=model("openl3"), sample_rate=48000, channels=1, embedding_dim=512
        ),
        "text_encoder": text_encoder_pb2.TextEncoderInfo(
            model=model("clip"), hidden_size=768, max_length=77, max_texts=8
        ),
        "generator": generator_pb2.GeneratorInfo(
            model=model("stable-diffusion"), cross_attention_dim=768, max_length=77
        ),
    }
    for key, value in changes.items():
        kind, fieldname = key.split("__")
        if isinstance(value, list):
            del getattr(infos[kind], fieldname)[:]
            getattr(infos[kind], fieldname).extend(value)
        else:
            setattr(infos[kind], fieldname, value)
    return Infos(**infos)  # type: ignore[arg-type]


def test_matching_services_pass() -> None:
    check_compatibility(_infos())


def test_text_dim_other_than_cross_attention_dim_names_both_services_and_numbers() -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_compatibility(_infos(text_encoder__hidden_size=1024))
    message = str(info.value)
    assert "text encoder (clip/clip-model)" in message and "1024-d" in message
    assert "generator (stable-diffusion/stable-diffusion-model)" in message and "768-d" in message


def test_separator_without_the_four_stems_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match=r"missing \['vocals'\]"):
        check_compatibility(_infos(separator__stems=["drums", "bass", "other", "guitar"]))


def test_token_lengths_must_agree() -> None:
    with pytest.raises(FailedPrecondition, match="64 tokens"):
        check_compatibility(_infos(text_encoder__max_length=64))


def test_projection_file_must_fit_encoder_and_text_dims(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", weight=np.ones((768, 2048)))
    with pytest.raises(FailedPrecondition, match="4096-d pooled audio vector"):
        check_compatibility(_infos(), projection=Projection.from_file(tmp_path / "p.npz"))
    np.savez(tmp_path / "s.npz", mean=np.zeros(100), std=np.ones(100))
    with pytest.raises(FailedPrecondition, match="100 dimensions"):
        check_compatibility(_infos(), stats=ReferenceStats.from_file(tmp_path / "s.npz"))


class _Error(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable, "the generator service at 'gen:1' is unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded, "did not finish before the deadline"),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput, "the generator refused the request"),
        (grpc.StatusCode.CANCELLED, Cancelled, "cancelled"),
    ],
)
def test_downstream_errors_name_the_service(code: grpc.StatusCode, kind: type, words: str) -> None:
    err = rpc_error("generator", "gen:1", _Error(code, "boom"))
    assert isinstance(err, kind) and words in str(err)


def test_a_service_that_takes_shorter_songs_than_the_orchestrator_accepts_is_refused_naming_both_numbers() -> None:
    # The orchestrator's max_seconds is the system's one length limit: 20 minutes by default.
    fits = _infos(separator__max_input_frames=44100 * 1200, audio_encoder__max_input_frames=48000 * 1200,
                  audio_encoder__max_signals=8)
    check_compatibility(fits, max_seconds=1200)
    short = _infos(separator__max_input_frames=44100 * 600, audio_encoder__max_input_frames=48000 * 1200)
    with pytest.raises(FailedPrecondition) as info:
        check_compatibility(short, max_seconds=1200)
    message = str(info.value)
    assert "1200 s" in message and "separator (demucs/demucs-model) takes at most 600 s" in message
    assert "26460000 frames at 44100 Hz" in message
    encoder_short = _infos(audio_encoder__max_input_frames=48000 * 60)
    with pytest.raises(FailedPrecondition, match=r"audio encoder .* takes at most 60 s"):
        check_compatibility(encoder_short, max_seconds=1200)


def test_an_encoder_that_takes_fewer_signals_than_the_four_stems_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match=r"at most 2 signal\(s\) per call; the orchestrator sends the 4 stems"):
        check_compatibility(_infos(audio_encoder__max_signals=2), max_seconds=60)


def test_a_separator_that_takes_less_than_the_48_khz_songs_are_decoded_to_is_refused() -> None:
    check_compatibility(_infos(separator__max_input_sample_rate=48000), max_seconds=60)
    with pytest.raises(FailedPrecondition, match=r"up to 48000 Hz, but the separator .* at most 44100 Hz"):
        check_compatibility(_infos(separator__max_input_sample_rate=44100), max_seconds=60)


def _with_transcriber(**changes: Any) -> Infos:
    from dataclasses import replace

    from audiomemory.v1 import tensor_pb2, transcriber_pb2

    words = transcriber_pb2.TranscriberInfo(
        model=common_pb2.ModelInfo(backend="whisper", model_id="whisper-model"), sample_rate=16000,
        max_input_sample_rate=384000, channels=1, max_input_channels=2, max_input_frames=16000 * 1200,
        accepted_dtypes=[tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16],
    )
    for name, value in changes.items():
        setattr(words, name, value)
    return replace(_infos(), transcriber=words)


def test_a_transcriber_that_takes_the_encoders_format_passes() -> None:
    check_compatibility(_with_transcriber(), max_seconds=1200)


@pytest.mark.parametrize(
    ("changes", "words"),
    [({"max_input_sample_rate": 44100}, "1 channel(s) at 48000 Hz, but the transcriber takes at most 2 channel(s) "
      "at up to 44100 Hz"),
     ({"max_input_channels": 0}, "takes at most 0 channel(s)"),
     ({"sample_rate": 0}, "reports sample_rate 0"),
     ({"max_input_frames": 16000 * 600}, "the transcriber (whisper/whisper-model) takes at most 600 s")],
)
def test_a_transcriber_that_cannot_take_the_vocal_stem_is_failed_precondition_naming_it(
    changes: dict[str, int], words: str
) -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_compatibility(_with_transcriber(**changes), max_seconds=1200)
    assert words in str(info.value)
