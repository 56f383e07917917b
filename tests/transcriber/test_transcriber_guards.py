"""The guards' effect (silence gate, no-speech probability, compression ratio) and the long-form seek."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from audiomemory.runtime.transcript import Segment
from audiomemory.transcriber.backends import Heard, TranscriberBackend
from audiomemory.transcriber.backends.whisper import WhisperBackend, compression_ratio
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.stream import TranscribeStream, level_dbfs

from .conftest import UNGUARDED, noise


def _backend(tiny_whisper: dict[str, Any], **guards: Any) -> WhisperBackend:
    # A few tokens a window are enough to see text kept or dropped (random weights may talk for 444).
    settings = {**tiny_whisper, **UNGUARDED, "max_new_tokens": 12, **guards}
    torch.set_num_threads(1)  # as the services under test run (torch_threads=1)
    backend = WhisperBackend(TranscriberConfig(**settings, device="cpu"))
    backend.load()
    return backend


def test_each_guard_turns_the_same_window_from_text_to_nothing(tiny_whisper: dict[str, Any]) -> None:
    audio = noise(16000, 8.0, seed=1)
    assert _backend(tiny_whisper).transcribe(audio, 16000).text  # unguarded: random weights say something
    # Random weights put every token near 1/vocabulary: log-probabilities far below 0, <|nospeech|> above 0.
    no_speech = _backend(tiny_whisper, no_speech_threshold=0.0, logprob_threshold=0.0)
    looping = _backend(tiny_whisper, compression_ratio_threshold=0.01)
    quiet = _backend(tiny_whisper, silence_dbfs=-10.0)  # the noise is at -20 dBFS
    for backend in (no_speech, looping, quiet):
        transcript = backend.transcribe(audio, 16000)
        assert transcript.text == "" and transcript.segments == () and transcript.language == ""
    window = audio[0]
    assert no_speech.decode_window(window, None).dropped == "no_speech"
    assert looping.decode_window(window, None).dropped == "compression_ratio"


def test_the_silence_gate_skips_the_model_for_silent_windows_only(tiny_whisper: dict[str, Any]) -> None:
    backend = _backend(tiny_whisper, silence_dbfs=-60.0)
    song = np.concatenate([np.zeros((1, 16000 * 30), np.float32), noise(16000, 10.0, seed=5)], axis=1)
    stream = TranscribeStream(backend)
    list(stream.add(song, 16000))
    list(stream.finish())
    assert stream.windows == 1  # the silent first 30 s never reached the model
    assert stream.result().segments and all(s.start >= 30.0 for s in stream.result().segments)
    assert level_dbfs(np.zeros(10, np.float32)) == -np.inf
    assert level_dbfs(np.full(10, 0.1, np.float32)) == pytest.approx(-20.0)


def test_compression_ratio_measures_repetition() -> None:
    assert compression_ratio("la " * 100) > 2.4 > compression_ratio("Hold me now under the lights")


class _Scripted(TranscriberBackend):
    """A backend that hears what it is told: a line cut by each window's end, 10 s into the window."""

    name = "scripted"

    def __init__(self, config: TranscriberConfig) -> None:
        super().__init__(config)
        self.calls: list[int] = []

    def load(self) -> None: ...

    def describe(self) -> Any: ...

    @property
    def sample_rate(self) -> int:
        return 100

    @property
    def window(self) -> int:
        return 3000  # 30 s

    def decode_window(self, audio: np.ndarray, language: str | None) -> Heard:
        self.calls.append(audio.shape[0])
        return Heard((Segment(0.0, 10.0, f"line {len(self.calls)}"),), "en",
                     unfinished=Segment(10.0, 30.0, f"cut {len(self.calls)}"))


def test_a_line_cut_by_a_window_edge_is_read_again_whole_from_its_start() -> None:
    backend = _Scripted(TranscriberConfig(silence_dbfs=None))
    transcript = backend.transcribe(np.full((1, 100 * 45), 0.1, np.float32), 100)
    # Window 1: 0-30 s, its cut line at 10 s → window 2 from 10 s: 10-40 s, cut at 20 s → last window 20-45 s.
    assert backend.calls == [3000, 3000, 2500]
    assert [(s.start, s.end, s.text) for s in transcript.segments] == [
        (0.0, 10.0, "line 1"), (10.0, 20.0, "line 2"), (20.0, 30.0, "line 3"), (30.0, 45.0, "cut 3")]
    assert transcript.text == "line 1 line 2 line 3 cut 3"
