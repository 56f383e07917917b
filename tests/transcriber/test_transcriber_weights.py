"""The real Whisper (large-v3-turbo, the default) hears a known phrase: needs its weights (``models pull``).

Marked ``weights``; skipped when the weights are not in the Hugging Face cache or when no recording is
given. The recording is a file of someone saying a known phrase (any rate, mono or stereo):
``AUDIOMEMORY_SPEECH=/path/to/speech.flac AUDIOMEMORY_SPEECH_TEXT="the phrase" pytest -m weights``.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from audiomemory.runtime.errors import ModelUnavailable
from audiomemory.transcriber.backends.whisper import WhisperBackend
from audiomemory.transcriber.config import TranscriberConfig

pytestmark = pytest.mark.weights


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", "", text.casefold()).split()


def test_the_real_model_transcribes_a_known_phrase_and_nothing_for_silence() -> None:
    import soundfile

    path, expected = os.environ.get("AUDIOMEMORY_SPEECH"), os.environ.get("AUDIOMEMORY_SPEECH_TEXT")
    if not path or not expected:
        pytest.skip("set AUDIOMEMORY_SPEECH (a recording of a known phrase) and AUDIOMEMORY_SPEECH_TEXT")
    backend = WhisperBackend(TranscriberConfig())
    try:
        backend.load()
    except ModelUnavailable as exc:
        pytest.skip(f"the real Whisper is not cached: {exc}")
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    transcript = backend.transcribe(np.ascontiguousarray(audio.T), rate)
    assert _words(transcript.text) == _words(expected)
    assert transcript.segments and transcript.segments[-1].end <= audio.shape[0] / rate + 0.02
    silence = backend.transcribe(np.zeros((1, 48000 * 35), np.float32), 48000)
    assert silence.text == "" and not silence.segments
