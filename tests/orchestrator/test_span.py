"""An image of a span of the song: its audio vector pooled from the span's one-second bins, its words the lines
inside it, its record enough to make it again — alone, from the cache, or painted after the song was heard once."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.cli.main import cli
from audiomemory.client import read_record, record_from_json
from audiomemory.orchestrator.cache import AudioCache, CachedAudio
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.lyrics import salient_window
from audiomemory.orchestrator.options import MAX_TIMED_LINES
from audiomemory.orchestrator.pipeline import Pipeline, Upload
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import orchestrator_pb2, transcriber_pb2

from .conftest import StartOrchestrator, run_job
from .songs import encode_samples, tone

LYRICS = "Hold me now\nUnder the lights\nHold me now"
Line = transcriber_pb2.TranscriptSegment


class _NoRoom:
    def resize(self, weight: int) -> None:
        pass


def _song() -> bytes:
    """Two seconds: two different chords, a second each (the full-size OpenL3 of the tiny profile costs ~0.3 s a
    window: ``coarse_models`` frames it every second, three windows a stem)."""
    return encode_samples("wav", np.concatenate([tone(22050, 1, 1.0, 1), tone(22050, 1, 1.0, 6)], axis=1), 22050)


def _span(start: int, end: int) -> orchestrator_pb2.Span:
    return orchestrator_pb2.Span(start_s=start, end_s=end)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _entry(address_cache: Path) -> tuple[AudioCache, str]:
    cache = AudioCache(address_cache)
    (path,) = [p for p in cache.root.glob("*/*.amc") if isinstance(cache.get(p.stem), CachedAudio)]
    return cache, path.stem


def _cache_dir(orch: RunningService) -> Path:
    return Path(orch.config.cache_dir)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One audio cache for the module's orchestrators that need no empty one: the song is heard once."""
    return tmp_path_factory.mktemp("span-cache")


def test_a_span_image_pools_its_seconds_records_its_span_and_a_cached_song_needs_no_audio_work(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], cache: Path
) -> None:
    orch = start_orchestrator(coarse_models, cache_dir=cache)
    data = _song()
    whole = record_from_json(run_job(orch.address, data, lyrics=LYRICS, seed=3, width=64, height=64).metadata_json)
    cache, key = _entry(_cache_dir(orch))
    entry = cache.get(key)
    assert isinstance(entry, CachedAudio) and entry.bins is not None and entry.bins.seconds == 2
    separations = coarse_models["separator"].request_count("Separate")
    part = run_job(orch.address, data, lyrics=LYRICS, seed=3, width=64, height=64, span=_span(1, 2))
    record = record_from_json(part.metadata_json)

    assert coarse_models["separator"].request_count("Separate") == separations  # a cache hit: no audio work
    assert record.cache_hit and record.request.span == _span(1, 2)
    assert record.section.words == "salient" and record.lyrics.text == salient_window(LYRICS)
    assert not whole.HasField("section") and not whole.request.HasField("span")
    span_vector = entry.bins.pooled((1, 2))
    assert record.fusion.audio_vector_sha256 == hashlib.sha256(span_vector.tobytes()).hexdigest()
    assert whole.fusion.audio_vector_sha256 == hashlib.sha256(entry.pooled.tobytes()).hexdigest()
    assert record.fusion.audio_vector_sha256 != whole.fusion.audio_vector_sha256


def test_an_entry_from_before_the_bins_serves_the_whole_song_and_is_rewritten_for_a_span(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], cache: Path
) -> None:
    orch = start_orchestrator(coarse_models, cache_dir=cache)
    data = _song()
    run_job(orch.address, data, seed=1, width=64, height=64)
    cache, key = _entry(_cache_dir(orch))
    entry = cache.get(key)
    assert isinstance(entry, CachedAudio)
    cache.put(key, CachedAudio(entry.pooled))  # as an orchestrator wrote it before bins were kept
    separations = coarse_models["separator"].request_count("Separate")
    whole = record_from_json(run_job(orch.address, data, seed=2, width=64, height=64).metadata_json)
    assert whole.cache_hit and coarse_models["separator"].request_count("Separate") == separations
    part = record_from_json(run_job(orch.address, data, seed=2, width=64, height=64,
                                    span=_span(0, 1)).metadata_json)
    assert not part.cache_hit and coarse_models["separator"].request_count("Separate") == separations + 1
    rewritten = cache.get(key)
    assert isinstance(rewritten, CachedAudio) and rewritten.bins is not None
    np.testing.assert_array_equal(rewritten.pooled, entry.pooled)  # the whole-song vector as it was


@pytest.mark.parametrize(("span", "limit", "what"), [((1, 3), 2, "the song's length rounded up"),
                                                      ((0, 9), 8, "the longest song, max_seconds, rounded up"),
                                                      ((3, 3), 8, "the longest song, max_seconds, rounded up")])
def test_a_span_outside_the_song_is_refused_naming_the_limit_and_what_came(
    orchestrator: RunningService, span: tuple[int, int], limit: int, what: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        run_job(orchestrator.address, _song(), span=_span(*span))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (f"options.span: whole seconds [start_s, end_s) with 0 <= start_s < end_s "
                                       f"<= {limit} ({what}), got [{span[0]}, {span[1]})")


TIMED = [Line(start=0.0, end=0.5, text="Hold me now"), Line(start=0.5, end=1.25, text="Under the lights"),
         Line(start=1.25, end=1.6, text="Into the night"), Line(start=1.6, end=2.0, text="into the night!")]


def test_timed_lyrics_give_a_span_the_lines_that_start_inside_it_and_its_record_makes_it_again(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], cache: Path
) -> None:
    orch, data = start_orchestrator(coarse_models, cache_dir=cache), _song()
    options: dict[str, Any] = {"timed_lyrics": TIMED, "seed": 5, "width": 64, "height": 64, "strength": 0.5}
    late = run_job(orch.address, data, span=_span(1, 2), **options)
    record = record_from_json(late.metadata_json)
    assert (record.section.words, record.lyrics.text) == ("timed_lyrics", "Into the night")
    assert record.lyrics.source == "given" and record.lyrics.full == "\n".join(line.text for line in TIMED)
    early = record_from_json(run_job(orch.address, data, span=_span(0, 1), **options).metadata_json)
    assert (early.section.words, early.lyrics.text) == ("timed_lyrics", "Hold me now, Under the lights")
    quiet = record_from_json(run_job(orch.address, data, span=_span(1, 2), **{**options, "timed_lyrics": TIMED[:2]})
                             .metadata_json)
    assert (quiet.section.words, quiet.lyrics.text) == ("salient", "Hold me now, Under the lights")
    whole = record_from_json(run_job(orch.address, data, **options).metadata_json)
    assert not whole.HasField("section") and whole.lyrics.text == "Into the night, Hold me now, Under the lights"

    again = run_job(orch.address, data, **{f.name: v for f, v in record.request.ListFields()})
    np.testing.assert_array_equal(_pixels(late.png), _pixels(again.png))
    assert record_from_json(again.metadata_json).fusion == record.fusion


@pytest.mark.parametrize(("options", "details"), [
    ({"timed_lyrics": [TIMED[1], TIMED[0]]},
     "options.timed_lyrics[1].start: lines in order of their start, got 0.0 after 0.5"),
    ({"timed_lyrics": [Line(start=-1.0, end=1.0, text="x")]}, "options.timed_lyrics[0].start: finite seconds >= 0, "
                                                              "got -1.0"),
    ({"timed_lyrics": [Line(start=1.0, end=float("nan"), text="x")]},
     "options.timed_lyrics[0].end: finite seconds >= 0, got nan"),
    ({"timed_lyrics": TIMED, "lyrics": "also"},
     "options.lyrics: must be empty when timed_lyrics are given (their text is the lyrics), got 4 characters"),
    ({"timed_lyrics": [Line(text="x" * 60_000)]}, "options.timed_lyrics: their text, a line each, at most 20000 "
                                                   "characters (the orchestrator's max_lyrics_chars), got 60000"),
    ({"timed_lyrics": [Line(start=float(i)) for i in range(MAX_TIMED_LINES + 1)]},
     f"options.timed_lyrics: at most {MAX_TIMED_LINES} lines, got {MAX_TIMED_LINES + 1}"),
    ({"timed_lyrics": TIMED, "lyrics_source": orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE},
     "options.timed_lyrics: must be empty when lyrics_source is transcribe, got 4 lines"),
])
def test_timed_lyrics_are_checked_before_the_upload(orchestrator: RunningService, options: dict[str, Any],
                                                     details: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        run_job(orchestrator.address, b"", **options)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == details


def test_reproduce_of_a_transcribed_span_image_is_pixel_exact(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], tmp_path: Path
) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(_song())
    made = run_job(start_orchestrator(coarse_models).address, song.read_bytes(), seed=4, width=64, height=64,
                   strength=0.5, span=_span(0, 1), lyrics_source=orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE)
    image = tmp_path / "span.png"
    image.write_bytes(made.png)
    record = read_record(made.png)
    assert record is not None and record.lyrics.source == "transcribed"
    inside = [segment.text for segment in record.lyrics.transcript.segments if 0 <= segment.start < 1]
    assert record.request.span == _span(0, 1)  # (the tiny Whisper hears a line at 0.7 s in this song)
    assert (record.section.words, record.lyrics.text) == (("transcript", salient_window("\n".join(inside))) if inside
                                                          else ("salient", record.lyrics.text))
    fresh = start_orchestrator(coarse_models)  # an empty cache: the span's vector made again from new bins
    result = CliRunner().invoke(cli, ["reproduce", str(image), "--song", str(song), "--orchestrator",
                                      fresh.address], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "pixels match: max difference 0/255" in result.output


def test_spans_painted_after_hearing_the_song_once_equal_each_span_made_alone(
    coarse_models: dict[str, RunningService], tmp_path: Path
) -> None:
    kinds = ("separator", "audio_encoder", "text_encoder", "generator")
    local = InProcessPipeline(*(coarse_models[k].backend for k in kinds),
                            configs={k: coarse_models[k].config for k in kinds})
    # with a cache, so that each span made alone is painted from the bins the song was heard into once
    pipeline = Pipeline(local.stages, AudioCache(tmp_path), local.fusion, local.pipeline.limits,
                        local.pipeline.identity)
    data = _song()
    options: dict[str, Any] = {"timed_lyrics": TIMED, "seed": 2, "steps": 2, "width": 64, "height": 64,
                               "strength": 0.5}
    sent = orchestrator_pb2.CreateImageOptions(**options)
    upload = Upload(data, hashlib.sha256(data).hexdigest(), _NoRoom())
    job = Job(None, stall_seconds=3600.0)
    try:
        opts, infos, _ = pipeline.prepare(job, sent)
        listened, _ = pipeline.listen(job, opts, infos, lambda: upload, lambda event: None, need_bins=True)
        together = [pipeline.paint_span(job, sent, replace(opts, span=span), infos, listened, lambda event: None)
                    for span in ((0, 1), (1, 2))]
        alone = [pipeline.run(job, orchestrator_pb2.CreateImageOptions(span=_span(*span), **options), lambda: upload,
                              lambda event: None) for span in ((0, 1), (1, 2))]
    finally:
        job.cancel_all()
    assert not listened.audio.cache_hit and all(result.record.cache_hit for result in alone)
    for painted, made in zip(together, alone, strict=True):
        np.testing.assert_array_equal(_pixels(painted.png), _pixels(made.png))
        assert painted.record.request == made.record.request and painted.record.fusion == made.record.fusion
        assert painted.record.section == made.record.section and painted.record.lyrics == made.record.lyrics
    assert not np.array_equal(_pixels(together[0].png), _pixels(together[1].png))
