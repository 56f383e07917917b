"""Stem weights and timed lyrics through the whole job, with the tiny models: the orchestrator's own code (the
in-process pipeline runs the job as the service does) and its gRPC front."""

from __future__ import annotations

import io
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.client import read_record
from audiomemory.lrc import parse_lrc
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import transcriber_pb2

from .conftest import run_job
from .songs import encode_song

LRC = """[ar:Nobody]
[ti:Lights]
[00:00.00]Hold me now
[00:00.40][00:01.10]Under the lights
[00:00.80]Hold me now
[00:01.40]
"""
PLAIN = "Hold me now\nUnder the lights\nHold me now\nUnder the lights"
KINDS = ("separator", "audio_encoder", "text_encoder", "generator")


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def pipeline(coarse_models: dict[str, RunningService]) -> InProcessPipeline:
    """The job in this process on the tiny models, the audio encoder framing once a second (the full-size OpenL3
    CNN: 2 windows a stem of a 1.5-s song, not 4)."""
    return InProcessPipeline(*(coarse_models[k].backend for k in KINDS),
                             configs={k: coarse_models[k].config for k in KINDS})


def _timed() -> list[transcriber_pb2.TranscriptSegment]:
    return [transcriber_pb2.TranscriptSegment(start=line.start, end=line.end, text=line.text)
            for line in parse_lrc(LRC).lines]


def test_weights_all_one_are_todays_fused_tensor_and_another_weight_moves_it(pipeline: InProcessPipeline) -> None:
    data = encode_song("wav", 22050, 1, seconds=1.5, seed=4)
    common: dict[str, Any] = {"lyrics": PLAIN, "seed": 2, "steps": 2, "strength": 0.5}
    plain = pipeline.run(data, **common)
    ones = pipeline.run(data, **common, stem_weights={stem: 1.0 for stem in ("vocals", "drums", "bass", "other")})
    louder = pipeline.run(data, **common, stem_weights={"vocals": 3.0, "drums": 0.25})
    assert np.array_equal(ones.fused, plain.fused)
    assert np.array_equal(_pixels(ones.png), _pixels(plain.png))
    assert np.array_equal(louder.pooled, plain.pooled)  # the weights act in the fusion, not on the audio vector
    assert not np.array_equal(louder.fused, plain.fused)
    assert dict(louder.record.request.stem_weights) == {"vocals": 3.0, "drums": 0.25, "bass": 1.0, "other": 1.0}
    assert not plain.record.request.stem_weights
    assert louder.record.fusion.steered


def test_a_whole_song_image_from_timed_lyrics_equals_the_one_from_the_same_lines_as_text(
    pipeline: InProcessPipeline,
) -> None:
    data = encode_song("flac", 44100, 2, seconds=1.5, seed=6)
    timed = pipeline.run(data, timed_lyrics=_timed(), seed=5, steps=2, strength=0.3)
    plain = pipeline.run(data, lyrics=PLAIN, seed=5, steps=2, strength=0.3)
    assert [s.text for s in timed.record.request.timed_lyrics] == PLAIN.splitlines()
    assert timed.record.lyrics.full == PLAIN and timed.record.lyrics.source == "given"
    assert timed.record.lyrics.text == plain.record.lyrics.text == "Hold me now, Under the lights"
    assert np.array_equal(timed.fused, plain.fused)
    assert np.array_equal(_pixels(timed.png), _pixels(plain.png))


@pytest.mark.parametrize(("options", "words"), [
    ({"stem_weights": {"drums": 5.0}}, "options.stem_weights[drums]: must be in [0, 4], got 5.0"),
    ({"stem_weights": {"piano": 1.0}}, "options.stem_weights: keys are the stems"),
    ({"lyrics": "la", "timed_lyrics": [transcriber_pb2.TranscriptSegment(start=0, end=1, text="la")]},
     "options.lyrics: must be empty when timed_lyrics are given"),
])
def test_bad_weights_or_lyrics_are_invalid_argument_over_grpc(
    orchestrator: RunningService, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        run_job(orchestrator.address, encode_song("wav", 16000, 1, seconds=1.0), seed=1, **options)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


def test_the_record_of_a_weighted_image_sends_the_weights_back_and_the_pixels_match(
    orchestrator: RunningService,
) -> None:
    data = encode_song("ogg", 44100, 2, seconds=1.0, seed=8)
    first = run_job(orchestrator.address, data, timed_lyrics=_timed(), seed=3, strength=0.8,
                    stem_weights={"bass": 2.5, "other": 0.0})
    meta = read_record(first.png)
    assert meta is not None and dict(meta.request.stem_weights)["bass"] == 2.5
    assert "Stem weights: vocals=1 drums=1 bass=2.5 other=0" in Image.open(io.BytesIO(first.png)).text["parameters"]  # type: ignore[attr-defined]
    again = run_job(orchestrator.address, data, **{f.name: v for f, v in meta.request.ListFields()})
    np.testing.assert_array_equal(_pixels(first.png), _pixels(again.png))
