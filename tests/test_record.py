"""The one reader of an image's record (``client.read_record`` / ``record_from_json``): records written before
``ImageRecord`` (schema 1, the untyped dict) read into the same message, hostile records are one clear line that
names the field and never quotes the payload, and ``reproduce`` pins what an image records."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from audiomemory.bench.hostile_png import png
from audiomemory.cli.common import JobFailed
from audiomemory.cli.reproduce import missing_identity, recorded_request
from audiomemory.client import MAX_RECORD_BYTES, UnreadableMetadata, read_record, record_from_json, record_json
from audiomemory.runtime import identity
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2, transcriber_pb2


def _info(service: str, model_id: str, **rest: Any) -> dict[str, Any]:
    """A service's ``Describe`` as schema 1 recorded it (``MessageToDict``: camelCase, every field)."""
    model = {"service": service, "backend": f"{service}-backend", "modelId": model_id, "revision": "f" * 40,
             "device": "cpu", "dtype": "float32", "version": "0.1.0", "extra": {"hop": "0.1"}}
    return {"model": model, **rest}


#: What ``build_metadata`` wrote on main before ``ImageRecord`` (schema 1), with the ``strengthSet`` of an image
#: made before strength had presence (0 left out) and a field no reader knows.
SCHEMA_1: dict[str, Any] = {
    "schema": 1,
    "song": {"sha256": "ab" * 32, "filename": "song.mp3", "bytes": 123456, "container": "mp3", "codec": "mp3float",
             "sample_rate": 44100, "channels": 2, "seconds": 12.345},
    "lyrics": {"window": "salient", "text": "la la, the night is young", "negative_prompt": "blurry",
               "truncated": [False, False], "full": "", "source": "transcribed",
               "transcript": {"text": "la la the night is young", "language": "en", "seconds": 12.345,
                              "segments": [{"start": 0.5, "end": 1.25, "text": "la la"},
                                           {"start": 2.0, "end": 3.5, "text": "the night is young"}]},
               "transcript_cache_hit": False},
    "fusion": {"strength": 0.0, "projection_seed": 4, "projection": "seed:4", "keep_bos": True,
               "reference_stats": None, "steered": False, "stems": ["vocals", "drums", "bass", "other"],
               "audio_vector_sha256": "cd" * 32},
    "generation": {"seed": 9, "steps": 20, "denoising_steps": 21, "guidance": 7.5, "guidance_set": False,
                   "width": 64, "height": 64, "scheduler": "pndm", "requested_scheduler": "", "requested_width": 64,
                   "requested_height": 64, "native_size": 512},
    "cache_hit": True,
    "stem_format": {"sampleRate": 48000, "channels": 1, "dtype": "float16"},
    "profile": "tiny",
    "request": {"lyricsWindow": "salient", "negativePrompt": "blurry", "seed": "9", "width": 64, "height": 64,
                "projectionSeed": "4", "keepBos": True, "strengthSet": True, "guidanceSet": False,
                "lyricsSource": "LYRICS_SOURCE_TRANSCRIBE", "filename": "song.mp3"},
    "services": {
        "orchestrator": {"model": _info("orchestrator", "audiomemory-orchestrator")["model"]},
        "separator": _info("separator", "htdemucs", sampleRate=44100, stems=["vocals", "drums", "bass", "other"]),
        "audio_encoder": _info("audio_encoder", "openl3", sampleRate=48000, channels=1),
        "text_encoder": _info("text_encoder", "clip", maxLength=77, hiddenSize=768),
        "generator": _info("generator", "sd-tiny", defaultSteps=20, defaultGuidance=7.5, nativeSize=512),
        "transcriber": _info("transcriber", "whisper-tiny", sampleRate=16000),
    },
    "created_unix": 1760000000,
    "a_field_from_elsewhere": {"nested": [1, 2, 3]},
}


def test_a_schema_1_record_reads_into_the_image_record_it_stands_for() -> None:
    record = read_record(png(SCHEMA_1))
    assert record is not None and record.schema == 1
    assert record.song == record_pb2.SongRecord(sha256="ab" * 32, filename="song.mp3", bytes=123456, container="mp3",
                                                codec="mp3float", sample_rate=44100, channels=2, seconds=12.345)
    assert record.lyrics.transcript.segments[1] == transcriber_pb2.TranscriptSegment(start=2.0, end=3.5,
                                                                                     text="the night is young")
    assert record.fusion.reference_stats == "" and record.fusion.projection_seed == 4 and record.cache_hit
    assert record.generation.denoising_steps == 21 and record.generation.native_size == 512
    assert record.stem_format == record_pb2.StemFormatRecord(sample_rate=48000, channels=1, dtype="float16")
    assert record.created_unix == 1760000000 and record.profile == "tiny"
    # The request: strengthSet without a strength was a strength of 0; guidanceSet false left guidance unset.
    assert record.request.HasField("strength") and record.request.strength == 0.0
    assert not record.request.HasField("guidance") and record.request.seed == 9 and record.request.keep_bos
    assert record.request.lyrics_source == orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE
    # Each Describe's model, with its identity; the generator's steps and guidance from the generation.
    assert set(record.served) == set(SCHEMA_1["services"])
    for kind, header in record.served.items():
        model = common_pb2.ModelInfo()
        model.service, model.model_id = kind, SCHEMA_1["services"][kind]["model"]["modelId"]
        assert header.model.model_id == model.model_id and header.model.extra == {"hop": "0.1"}
        assert header.identity == identity.identity(header.model)
    assert dict(record.served["generator"].resolved) == {"steps": "20", "guidance": "7.5"}
    assert not record.served["separator"].resolved
    # Written again (``record_json``), it reads back the same.
    assert record_from_json(record_json(record)) == record


def test_a_record_of_the_keys_before_a_schema_reads_as_schema_1() -> None:
    old = {"song": {"sha256": "ab" * 32}, "generation": {"seed": 3, "steps": 2}, "request": {"scheduler": "euler"}}
    record = record_from_json(json.dumps(old))
    assert record.schema == 1 and record.generation.seed == 3 and record.request.scheduler == "euler"
    assert not record.served


MARK = "PAYLOAD-MARK"


@pytest.mark.parametrize(("text", "says"), [
    (json.dumps({"schema": 2, "pad": "x" * MAX_RECORD_BYTES}), f"over the {MAX_RECORD_BYTES} a reader takes"),
    ("[" * 100_000 + "]" * 100_000, "nests deeper than a reader follows"),
    (json.dumps({"schema": 2, "lyrics": {"text": [MARK]}}), "lyrics.text: expected a string, got a list"),
    (json.dumps({"schema": 2, "song": {"bytes": MARK}}), "song.bytes: a value out of range or of the wrong form"),
    (json.dumps({"schema": 2, "song": {"bytes": 10 ** 40}}), "song.bytes: a value out of range"),
    (json.dumps({"schema": 2, "served": {"generator": {"model": {"dtype": 5}}}}),
     "served.generator.model.dtype: expected a string, got a int"),
    (json.dumps({"schema": 2, "served": {MARK * 10: 5}}), "served[…]: expected an object, got a int"),
    (json.dumps({"schema": 2, "request": {"pins": []}}), "request.pins: expected an object, got a list"),
    (json.dumps({"schema": 2, "generation": {"guidance": "NaN"}}), "generation.guidance: expected a finite number"),
    (json.dumps({"schema": [2]}), "schema: expected an integer, got a list"),
    (json.dumps({"services": {"generator": {"model": [MARK]}}}), "served.generator.model: expected an object"),
    (json.dumps({"request": {"strengthSet": True, "strength": MARK}}), "request.strength: expected a finite number"),
], ids=["oversized", "deep", "string-is-a-list", "integer-is-text", "integer-out-of-range", "served-model-type",
        "served-entry-type", "pins-is-a-list", "nan-as-text", "schema-is-a-list", "schema-1-services-model-type",
        "schema-1-request-type"])
def test_a_record_that_cannot_be_read_is_one_line_naming_the_field_never_the_payload(text: str, says: str) -> None:
    with pytest.raises(UnreadableMetadata) as refused:
        record_from_json(text, "forged.png")
    message = str(refused.value)
    assert message.startswith("forged.png: ") and says in message, message
    assert "\n" not in message and MARK not in message and len(message) < 300


def test_reproduce_pins_every_service_the_image_records_and_sends_transcribed_lyrics_as_given() -> None:
    generator = identity.served(common_pb2.ModelInfo(backend="diffusers", model_id="sd15", revision="a" * 40,
                                                     dtype="bfloat16"), {"steps": 20, "guidance": 7.5})
    separator = identity.served(common_pb2.ModelInfo(backend="demucs", model_id="htdemucs", dtype="float32"))
    record = record_pb2.ImageRecord(
        schema=2,
        request=orchestrator_pb2.CreateImageOptions(seed=3, lyrics_source=orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE),
        served={"generator": generator, "separator": separator,
                "orchestrator": identity.served(common_pb2.ModelInfo(backend="orchestrator"))},
        lyrics=record_pb2.LyricsRecord(source="transcribed", transcript=transcriber_pb2.Transcript(segments=[
            transcriber_pb2.TranscriptSegment(start=0, end=1, text="la la"),
            transcriber_pb2.TranscriptSegment(start=1, end=2, text="the night")])))
    request = recorded_request(record)
    assert dict(request.pins) == {"generator": identity.pin_for(generator), "separator": identity.pin_for(separator)}
    assert request.pins["generator"].describe == "diffusers/sd15@aaaaaaaaaaaa (bfloat16)"
    assert request.seed == 3 and request.lyrics == "la la\nthe night"
    assert request.lyrics_source == orchestrator_pb2.LYRICS_SOURCE_GIVEN
    assert not record.request.pins  # the record itself is left as read

    refused = JobFailed(_Failed(grpc.StatusCode.FAILED_PRECONDITION, f"generator: the request pins "
                                f"{request.pins['generator'].describe} (identity {generator.identity}); this "
                                "replica runs diffusers/sd15@aaaaaaaaaaaa (float32) (identity 0123)"))
    said = missing_identity(refused, request)
    assert said.startswith("no generator replica runs diffusers/sd15@aaaaaaaaaaaa (bfloat16) (identity ")
    assert "the image was painted by it" in said
    assert missing_identity(JobFailed(_Failed(grpc.StatusCode.UNAVAILABLE, "down")), request) == ""
    record.schema = 1  # a Describe answer, maybe not the replica that ran: not pinned
    assert not recorded_request(record).pins


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details
