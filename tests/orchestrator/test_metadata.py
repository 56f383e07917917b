"""The PNG keeps its pixels and gains the A1111 ``parameters`` and the JSON ``audiomemory`` chunks; the longest
texts a job accepts still make a record every reader reads back."""

from __future__ import annotations

import io
import json
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from audiomemory.client import MAX_RECORD_BYTES, read_metadata
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.metadata import embed_metadata
from audiomemory.orchestrator.options import MAX_FILENAME_CHARS, MAX_NEGATIVE_CHARS
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.runtime.service import RunningService

from .conftest import StartOrchestrator, run_job
from .songs import encode_song


def _metadata() -> dict[str, Any]:
    return {
        "song": {"sha256": "ab" * 32},
        "lyrics": {"window": "salient", "text": "Hold me now, Ünder the lights", "negative_prompt": "blurry"},
        "fusion": {"strength": 0.1, "projection": "seed:0", "keep_bos": False},
        "generation": {"seed": 7, "steps": 30, "guidance": 7.5, "guidance_set": True, "width": 64,
                       "height": 48, "scheduler": "pndm"},
        "services": {"generator": {"model": {"modelId": "sd-tiny"}}, "text_encoder": {"model": {"modelId": "clip"}}},
    }


def test_metadata_chunks_are_added_and_pixels_unchanged() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    out = embed_metadata(buf.getvalue(), _metadata())
    image = Image.open(io.BytesIO(out))
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert read_metadata(out) == _metadata()
    params = image.text["parameters"]  # type: ignore[attr-defined]
    assert params.splitlines()[0] == "Hold me now, Ünder the lights"
    assert params.splitlines()[1] == "Negative prompt: blurry"
    assert params.splitlines()[2].startswith("Steps: 30, Sampler: pndm, CFG scale: 7.5, Seed: 7, Size: 64x48")


def _largest(setting: str) -> int:
    """The largest value an operator may give ``setting`` (its ``le`` bound)."""
    return int(next(m.le for m in OrchestratorConfig.model_fields[setting].metadata if hasattr(m, "le")))


def test_the_longest_texts_a_job_accepts_make_an_image_every_reader_reads_back(
    models: dict[str, RunningService], start_orchestrator: StartOrchestrator
) -> None:
    limit = _largest("max_lyrics_chars")
    orchestrator = start_orchestrator(models, max_lyrics_chars=limit)
    worst = "\x01"  # JSON writes it \u0001: six bytes a character, the most any character takes
    song = encode_song("wav", 16000, 1, seconds=1.0)
    result = run_job(orchestrator.address, song, seed=1, width=64, height=64, lyrics=worst * limit,
                     lyrics_window="head", negative_prompt=worst * MAX_NEGATIVE_CHARS,
                     filename=worst * (MAX_FILENAME_CHARS - 4) + ".wav")
    record = json.loads(result.metadata_json)
    assert record["lyrics"]["full"] == worst * limit and record["song"]["filename"].startswith(worst)
    assert read_metadata(result.png) == record
    with Image.open(io.BytesIO(result.png)) as image:
        assert json.loads(image.text["audiomemory"]) == record  # type: ignore[attr-defined]
    # A text encoder that keeps longer windows (the tiny one cuts it to its max_chars): a window is the lyrics'
    # distinct lines, each once, ", " where the lyrics had a newline (both two bytes of JSON), so its JSON is
    # never longer than theirs; a window a quarter longer still reads back.
    record["lyrics"]["text"] = worst * (limit * 5 // 4)
    assert read_metadata(embed_metadata(result.png, record)) == record

    with pytest.raises(grpc.RpcError) as refused:
        run_job(orchestrator.address, song, seed=1, lyrics=worst * (limit + 1))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (f"options.lyrics: at most {limit} characters (the orchestrator's "
                                       f"max_lyrics_chars), got {limit + 1}")


def test_a_record_no_reader_could_read_back_is_never_written() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    record = {**_metadata(), "lyrics": {**_metadata()["lyrics"], "full": "\x01" * MAX_RECORD_BYTES}}
    with pytest.raises(AudioMemoryError, match=f"over the {MAX_RECORD_BYTES} bytes"):
        embed_metadata(buf.getvalue(), record)
    assert MAX_RECORD_BYTES <= PngImagePlugin.MAX_TEXT_CHUNK
