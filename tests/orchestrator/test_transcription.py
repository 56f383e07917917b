"""The orchestrator's "transcribe" lyrics source, over real gRPC in front of the five tiny model services."""

from __future__ import annotations

import grpc
import pytest

from audiomemory.client import record_from_json
from audiomemory.orchestrator.lyrics import salient_window
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import orchestrator_pb2

from .conftest import StartOrchestrator, run_job
from .songs import encode_song

Stage = orchestrator_pb2.Stage
TRANSCRIBE = orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE


def _counts(models: dict[str, RunningService]) -> dict[str, int]:
    return {"separate": models["separator"].request_count("Separate"),
            "embed": models["audio_encoder"].request_count("Embed"),
            "transcribe": models["transcriber"].request_count("Transcribe")}


def test_transcribed_lyrics_are_in_the_metadata_and_a_reseed_never_transcribes_again(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models)
    data = encode_song("flac", 44100, 2, seconds=1.0, seed=5)
    before = _counts(models)
    first = run_job(orch.address, data, lyrics_source=TRANSCRIBE, seed=1)
    after_first = _counts(models)
    second = run_job(orch.address, data, lyrics_source=TRANSCRIBE, seed=2)

    assert after_first["transcribe"] == before["transcribe"] + 1
    assert _counts(models) == after_first  # the re-seed: no separation, no embedding, no transcription
    meta1, meta2 = record_from_json(first.metadata_json), record_from_json(second.metadata_json)
    lyrics = meta1.lyrics
    assert lyrics.source == "transcribed" and lyrics.transcript_cache_hit is False
    transcript = lyrics.transcript
    assert transcript.seconds == pytest.approx(1.0, abs=0.05)
    assert all(0 <= s.start <= s.end <= transcript.seconds for s in transcript.segments)
    lines = "\n".join(s.text for s in transcript.segments)
    assert lyrics.text == salient_window(lines)  # the segments are the lines of the window
    assert meta1.served["transcriber"].model.backend == "whisper"
    assert meta1.request.lyrics_source == TRANSCRIBE
    transcribing = [e for e in first.events if e.stage == Stage.STAGE_TRANSCRIBING]
    assert transcribing and transcribing[-1].current == transcribing[-1].total == 1
    assert meta2.lyrics.transcript == lyrics.transcript and meta2.lyrics.transcript_cache_hit is True
    assert [e.message for e in second.events if e.cache_hit] == ["cache hit", "cache hit: transcribed before"]


def test_a_cached_vector_without_a_transcript_separates_the_vocals_again_and_skips_the_embedding(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models)
    data = encode_song("wav", 32000, 1, seconds=1.0, seed=6)
    given = run_job(orch.address, data, lyrics="Hold me now\nHold me now")
    before = _counts(models)
    heard = run_job(orch.address, data, lyrics_source=TRANSCRIBE)

    assert record_from_json(given.metadata_json).lyrics.source == "given"
    assert _counts(models) == {**before, "separate": before["separate"] + 1, "transcribe": before["transcribe"] + 1}
    meta = record_from_json(heard.metadata_json)
    assert meta.cache_hit is True and meta.lyrics.source == "transcribed"
    assert any("for the vocal stem" in e.message for e in heard.events if e.stage == Stage.STAGE_SEPARATING)
    assert not [e for e in heard.events if e.stage == Stage.STAGE_EMBEDDING and not e.cache_hit]


def test_unset_source_keeps_the_given_lyrics_or_none_and_never_transcribes(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models)
    data = encode_song("wav", 22050, 1, seconds=1.0, seed=7)
    before = models["transcriber"].request_count("Transcribe")
    given = record_from_json(run_job(orch.address, data, lyrics="Under the lights").metadata_json)
    none = record_from_json(run_job(orch.address, data).metadata_json)

    assert models["transcriber"].request_count("Transcribe") == before
    assert given.lyrics.source == "given" and given.lyrics.text == "Under the lights"
    assert none.lyrics.source == "none" and not none.lyrics.HasField("transcript")
    assert "transcriber" not in none.served
    assert none.request.lyrics_source == orchestrator_pb2.LYRICS_SOURCE_NONE


def test_transcribe_without_a_transcriber_is_failed_precondition_saying_so(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models, transcriber_target="")
    data = encode_song("wav", 22050, 1, seconds=0.5)
    with pytest.raises(grpc.RpcError) as info:
        run_job(orch.address, data, lyrics_source=TRANSCRIBE)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "no transcriber configured" in (info.value.details() or "")
    ok = record_from_json(run_job(orch.address, data, lyrics="la la").metadata_json)  # the rest still works
    assert ok.lyrics.source == "given"


@pytest.mark.parametrize("source", [orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE, orchestrator_pb2.LYRICS_SOURCE_NONE])
def test_lyrics_with_a_source_that_reads_none_are_invalid_argument(
    orchestrator: RunningService, source: int
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        run_job(orchestrator.address, b"not read", lyrics="words", lyrics_source=source)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "options.lyrics: must be empty" in (info.value.details() or "")


def test_cli_auto_transcribes_only_where_a_transcriber_stands_behind_the_orchestrator(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService], capsys: pytest.CaptureFixture[str]
) -> None:
    from audiomemory.cli.common import PLAINTEXT
    from audiomemory.cli.generate import lyrics_options

    with_words = start_orchestrator(models)
    without = start_orchestrator(models, transcriber_target="")
    assert lyrics_options("auto", with_words.address, PLAINTEXT) == ("", TRANSCRIBE)
    assert capsys.readouterr().err == ""
    assert lyrics_options("auto", without.address, PLAINTEXT) == ("", orchestrator_pb2.LYRICS_SOURCE_NONE)
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "no transcriber behind the orchestrator" in note
    assert lyrics_options("none", with_words.address, PLAINTEXT) == ("", orchestrator_pb2.LYRICS_SOURCE_NONE)
