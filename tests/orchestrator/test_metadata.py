"""The PNG keeps its pixels and gains the A1111 ``parameters`` and the JSON ``audiomemory`` chunks; the record
(``ImageRecord``) reads back equal, records the replica that painted, and the longest texts a job accepts still
make a record every reader reads back."""

from __future__ import annotations

import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from audiomemory.client import MAX_RECORD_BYTES, read_record, record_from_json
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.decode import DecodedAudio
from audiomemory.orchestrator.downstream import Painted, StemFormat
from audiomemory.orchestrator.front import AudioVector
from audiomemory.orchestrator.fusion import Fused
from audiomemory.orchestrator.options import MAX_FILENAME_CHARS, MAX_NEGATIVE_CHARS, MAX_TIMED_LINES, JobOptions
from audiomemory.orchestrator.record import build_record, embed_record
from audiomemory.orchestrator.service import DEFINITION
from audiomemory.runtime import identity
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.runtime.transcript import Segment, Transcript
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2, transcriber_pb2

from .conftest import run_job, targets
from .songs import encode_song


def _model(kind: str, model_id: str, dtype: str = "float32") -> common_pb2.ModelInfo:
    return common_pb2.ModelInfo(service=kind, backend=f"{kind}-backend", model_id=model_id, revision="r" * 40,
                                device="cpu", dtype=dtype)


def _record(asked_guidance: float | None = 7.5, transcript: Transcript | None = None, **resolved: Any
            ) -> record_pb2.ImageRecord:
    """``build_record`` of a job whose generator replica resolved ``resolved`` (steps 30, guidance 7.5)."""
    opts = JobOptions(lyrics="Hold me now\nÜnder the lights", source="given", window="salient",
                      negative_prompt="blurry", strength=0.10000000149011612, seed=7, steps=0, guidance=asked_guidance,
                      width=64, height=48, scheduler="", projection_seed=0, keep_bos=False, filename="song.mp3")
    painter = {"steps": 30, "guidance": 7.5, **resolved}
    served = {"generator": identity.served(_model("generator", "sd-tiny", "bfloat16"), painter),
              "text_encoder": identity.served(_model("text_encoder", "clip")),
              "separator": identity.served(_model("separator", "htdemucs")),
              "audio_encoder": identity.served(_model("audio_encoder", "openl3"))}
    song = DecodedAudio(np.zeros((2, 4), np.float32), 44100, "mp3", "mp3float", 2, 44100)
    return build_record(
        opts=opts, served=served, orchestrator=_model("orchestrator", "audiomemory-orchestrator"), profile="tiny",
        song=song, sha256="ab" * 32, upload_bytes=1234, window="Hold me now, Ünder the lights",
        truncated=(False, False), fusion=SimpleNamespace(stats=None), fused=Fused(np.zeros(1), True, "seed:0"),
        painted=Painted(b"", 64, 48, "pndm"), denoising_steps=31,
        audio=AudioVector(np.arange(8, dtype=np.float32), False, transcript),
        stem_format=StemFormat(48000, 1, "float16"),
        request=orchestrator_pb2.CreateImageOptions(lyrics="Hold me now\nÜnder the lights", seed=7, strength=0.1),
        native_size=512)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_metadata_chunks_are_added_and_pixels_unchanged_and_the_record_reads_back_equal() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    record = _record(transcript=Transcript.of([Segment(0.12345, 1.5, "Hold me now")], "en", 2.0))
    out = embed_record(_png(pixels), record)
    image = Image.open(io.BytesIO(out))
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert read_record(out) == record
    assert record_from_json(image.text["audiomemory"]) == record  # type: ignore[attr-defined]
    assert record.schema == 2 and record.lyrics.transcript.segments[0].start == 0.123
    params = image.text["parameters"]  # type: ignore[attr-defined]
    assert params.splitlines()[0] == "Hold me now, Ünder the lights"
    assert params.splitlines()[1] == "Negative prompt: blurry"
    assert params.splitlines()[2].startswith("Steps: 30, Sampler: pndm, CFG scale: 7.5, Seed: 7, Size: 64x48, "
                                             "Model: sd-tiny, Text encoder: clip, Audio strength: 0.1")


def test_the_record_holds_what_the_painting_replica_resolved_and_the_orchestrators_own_header() -> None:
    record = _record(asked_guidance=None, steps=20, guidance=5.0)
    assert (record.generation.steps, record.generation.guidance, record.generation.guidance_set) == (20, 5.0, False)
    painter = record.served["generator"]
    assert painter.model.dtype == "bfloat16" and painter.identity == identity.identity(painter.model)
    assert record.served["orchestrator"] == identity.served(_model("orchestrator", "audiomemory-orchestrator"))
    assert set(record.served) == {"orchestrator", "separator", "audio_encoder", "text_encoder", "generator"}
    assert record.stem_format == record_pb2.StemFormatRecord(sample_rate=48000, channels=1, dtype="float16")
    assert record.request.strength == pytest.approx(0.1) and not record.lyrics.HasField("transcript")
    assert record.fusion.stems == ["vocals", "drums", "bass", "other"] and record.fusion.reference_stats == ""


def _largest(setting: str) -> int:
    """The largest value an operator may give ``setting`` (its ``le`` bound)."""
    return int(next(m.le for m in OrchestratorConfig.model_fields[setting].metadata if hasattr(m, "le")))


@pytest.fixture(scope="module")
def roomy(models: dict[str, RunningService], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One orchestrator for the module's jobs (the second one's song is a cache hit), taking the longest lyrics
    an operator may allow."""
    config = OrchestratorConfig(port=0, cache_dir=tmp_path_factory.mktemp("cache"), caller_share=None,
                                max_calls_per_caller=None, max_lyrics_chars=_largest("max_lyrics_chars"),
                                **targets(models))
    svc = start_service(DEFINITION, config, wait=True, wait_timeout=60)
    yield svc
    svc.stop(0)
    svc.backend.close()


def test_the_longest_texts_a_job_accepts_make_an_image_every_reader_reads_back(roomy: RunningService) -> None:
    limit = _largest("max_lyrics_chars")
    orchestrator = roomy
    worst = "\x01"  # JSON writes it \u0001: six bytes a character, the most any character takes
    song = encode_song("wav", 16000, 1, seconds=0.5)
    result = run_job(orchestrator.address, song, seed=1, width=64, height=64, lyrics=worst * limit,
                     lyrics_window="head", negative_prompt=worst * MAX_NEGATIVE_CHARS,
                     filename=worst * (MAX_FILENAME_CHARS - 4) + ".wav")
    record = record_from_json(result.metadata_json)
    assert record.lyrics.full == worst * limit and record.song.filename.startswith(worst)
    assert read_record(result.png) == record
    with Image.open(io.BytesIO(result.png)) as image:
        assert image.text["audiomemory"] == result.metadata_json  # type: ignore[attr-defined]
    # A text encoder that keeps longer windows (the tiny one cuts it to its max_chars): a window is the lyrics'
    # distinct lines, each once, ", " where the lyrics had a newline (both two bytes of JSON), so its JSON is
    # never longer than theirs; a window a quarter longer still reads back.
    record.lyrics.text = worst * (limit * 5 // 4)
    assert read_record(embed_record(result.png, record)) == record

    with pytest.raises(grpc.RpcError) as refused:
        run_job(orchestrator.address, song, seed=1, lyrics=worst * (limit + 1))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (f"options.lyrics: at most {limit} characters (the orchestrator's "
                                       f"max_lyrics_chars), got {limit + 1}")


def test_the_most_timed_lyrics_a_job_accepts_make_an_image_every_reader_reads_back(roomy: RunningService) -> None:
    # The record holds timed lyrics three times (the request's lines with their times, their text, its window):
    # the most lines, their text the longest the orchestrator may take, every character six bytes of JSON.
    limit = _largest("max_lyrics_chars")
    orchestrator = roomy
    worst, each = "\x01", (limit + 1) // MAX_TIMED_LINES - 1
    lines = [transcriber_pb2.TranscriptSegment(start=1199.123456 * i / MAX_TIMED_LINES, end=1199.987654,
                                               text=worst * each) for i in range(MAX_TIMED_LINES)]
    song = encode_song("wav", 16000, 1, seconds=0.5)
    result = run_job(orchestrator.address, song, seed=1, width=64, height=64, timed_lyrics=lines,
                     lyrics_window="head", negative_prompt=worst * MAX_NEGATIVE_CHARS)
    record = record_from_json(result.metadata_json)
    assert len(record.request.timed_lyrics) == MAX_TIMED_LINES and len(record.lyrics.full) > limit - MAX_TIMED_LINES
    assert len(result.metadata_json) > 600_000  # (the window the tiny text encoder keeps is shorter than a real one's)
    assert read_record(result.png) == record


def test_a_record_no_reader_could_read_back_is_never_written() -> None:
    record = _record()
    record.lyrics.full = "\x01" * MAX_RECORD_BYTES
    with pytest.raises(AudioMemoryError, match=f"over the {MAX_RECORD_BYTES} bytes"):
        embed_record(_png(np.zeros((8, 8, 3), np.uint8)), record)
    assert MAX_RECORD_BYTES <= PngImagePlugin.MAX_TEXT_CHUNK
