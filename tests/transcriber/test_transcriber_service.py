"""The transcriber over real gRPC with the tiny Whisper: it adds and loses nothing, windows long signals,
says nothing for silence, and states what it is."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import soxr

from audiomemory.runtime.service import RunningService
from audiomemory.transcriber.backends.whisper import WhisperBackend
from audiomemory.v1 import common_pb2, transcriber_pb2_grpc

from .conftest import noise, requests, transcribe


def _words(text: str) -> str:
    return " ".join(text.split())


def test_service_transcript_equals_the_models_own_decoding_of_the_same_audio(
    unguarded_service: RunningService, whisper: WhisperBackend
) -> None:
    import torch

    audio = noise(16000, 30.0, seed=1)  # one whole window: nothing of the model's output lies in padding
    transcript = transcribe(unguarded_service, requests(audio, 16000))[-1].transcript
    # The model's own greedy decoding of the same samples, as transformers documents it (no code of ours).
    model, features, tokenizer = whisper._model, whisper._features, whisper._tokenizer
    assert model is not None and features is not None
    inputs = features(audio[0], sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        tokens = model.generate(inputs, return_timestamps=True, task="transcribe")[0]
    reference = tokenizer.decode(tokens, skip_special_tokens=True, output_offsets=True)

    assert transcript.text.strip()  # a service (or backend) that returns "" fails here
    assert _words(transcript.text) == _words(reference["text"])
    expected = [(tuple(round(t, 2) for t in s["timestamp"]), s["text"].strip()) for s in reference["offsets"]
                if s["text"].strip()]
    assert [((round(s.start, 2), round(s.end, 2)), s.text) for s in transcript.segments] == expected
    assert transcript.language == whisper._languages[int(model.detect_language(inputs)[0])]
    assert transcript.seconds == pytest.approx(30.0)


def test_long_signals_go_window_by_window_with_timestamps_across_the_whole_signal(
    unguarded_service: RunningService, whisper: WhisperBackend
) -> None:
    rate, seconds = 48000, 75.0
    audio = noise(rate, seconds, seed=2, channels=2)
    replies = transcribe(unguarded_service, requests(audio, rate, piece=rate * 7, input_frames=audio.shape[1],
                                                      dtype="float16"))
    progress = [r.progress for r in replies if r.HasField("progress")]
    transcript = replies[-1].transcript

    assert len(progress) >= 3  # 75 s: at least three 30 s windows
    done = [p.seconds_done for p in progress]
    assert done == sorted(done) and done[-1] == pytest.approx(seconds, abs=0.01)
    assert all(p.seconds_total == pytest.approx(seconds) for p in progress)
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and all(0 <= s.start <= s.end <= seconds for s in transcript.segments)
    assert max(s.end for s in transcript.segments) > 30  # segments from the later windows, in signal time
    # The in-process path runs the same stream on the same (float16-rounded, mono-mixed, resampled) audio.
    same = whisper.transcribe(audio.astype(np.float16).astype(np.float32), rate)
    assert [(s.start, s.end, s.text) for s in same.segments] == [(s.start, s.end, s.text) for s in transcript.segments]


def test_silence_and_near_silence_give_an_empty_transcript(guarded_service: RunningService) -> None:
    for audio in (np.zeros((1, 48000 * 40), np.float32), noise(48000, 40, level=1e-4)):  # -80 dBFS
        transcript = transcribe(guarded_service, requests(audio, 48000))[-1].transcript
        assert transcript.text == "" and not transcript.segments and transcript.language == ""
        assert transcript.seconds == pytest.approx(40.0)


def test_describe_states_the_model_rate_the_accepted_rates_and_the_guards(guarded_service: RunningService) -> None:
    with grpc.insecure_channel(guarded_service.address) as channel:
        info = transcriber_pb2_grpc.TranscriberStub(channel).Describe(common_pb2.DescribeRequest(), timeout=10)
    assert info.model.service == "transcriber" and info.model.backend == "whisper"
    assert info.sample_rate == 16000 and info.max_input_sample_rate >= 48000
    assert info.channels == 1 and info.max_input_channels == 2
    assert info.window_seconds == 30 and info.max_input_frames == 60 * 16000
    assert info.model.extra["guards"] == "silence_dbfs=-60,no_speech>0.6&logprob<-1,compression_ratio>2.4"
    assert info.model.revision.startswith("sha256:")


def test_resampling_in_the_service_matches_soxr_on_the_whole_signal(unguarded_service: RunningService) -> None:
    audio = noise(48000, 5.0, seed=3)
    whole = soxr.resample(audio[0], 48000, 16000, quality="HQ")[None, :].astype(np.float32)
    streamed = transcribe(unguarded_service, requests(audio, 48000, piece=4800))[-1].transcript
    direct = transcribe(unguarded_service, requests(whole, 16000))[-1].transcript
    assert streamed.seconds == pytest.approx(direct.seconds, abs=1e-3)
    assert streamed.language == direct.language
