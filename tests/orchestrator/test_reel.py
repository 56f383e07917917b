"""``CreateReel`` over real gRPC in front of the four tiny model services: the sections once, then each section's
image with its record as it is painted; the reel's options refused before a job slot, naming the field; one
slot of the job budget whatever its sections; a cancel stops its work; its sections painted in batches, each the
image its record's request makes alone."""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from audiomemory.client import read_record, record_from_json
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from .conftest import CHUNK, StartOrchestrator, requests, run_job
from .songs import encode_song

Stage = orchestrator_pb2.Stage


@dataclass
class Reel:
    events: list[orchestrator_pb2.StageEvent] = field(default_factory=list)
    sections: list[orchestrator_pb2.ReelSections] = field(default_factory=list)
    images: list[tuple[int, tuple[int, int], bytes, str]] = field(default_factory=list)  # index, span, png, json
    order: list[str] = field(default_factory=list)  # the kinds of responses, as they came


def reel_requests(data: bytes, reel: dict[str, Any], **image: Any) -> Iterator[orchestrator_pb2.CreateReelRequest]:
    options = orchestrator_pb2.ReelOptions(image=orchestrator_pb2.CreateImageOptions(**image), **reel)
    yield orchestrator_pb2.CreateReelRequest(options=options)
    for start in range(0, len(data), CHUNK):
        yield orchestrator_pb2.CreateReelRequest(file_chunk=data[start:start + CHUNK])


def run_reel(address: str, data: bytes, reel: dict[str, Any], *, timeout: float = 300, **image: Any) -> Reel:
    image = {"steps": 1, "width": 64, "height": 64, **image}
    result = Reel()
    png = bytearray()
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for response in stub.CreateReel(reel_requests(data, reel, **image), timeout=timeout):
            kind = response.WhichOneof("item")
            result.order.append(kind)
            if kind == "event":
                result.events.append(response.event)
            elif kind == "sections":
                result.sections.append(response.sections)
            else:
                piece = response.image
                png += piece.png
                if piece.last:
                    span = (piece.span.start_s, piece.span.end_s)
                    result.images.append((piece.index, span, bytes(png), piece.metadata_json))
                    png = bytearray()
    return result


@pytest.fixture(scope="module")
def song() -> bytes:
    return encode_song("wav", 22050, 2, seconds=6.4, seed=9)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One audio cache for the module's orchestrators: the song is heard once (the tiny models take a while)."""
    return tmp_path_factory.mktemp("reel-cache")


def test_a_reel_streams_its_sections_then_each_image_with_a_record_of_its_own(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], song: bytes, cache: Path
) -> None:
    orch = start_orchestrator(coarse_models, max_seconds=30.0, cache_dir=cache)
    reel = run_reel(orch.address, song, {"sections": 3, "min_section_seconds": 2, "seed_per_section": True}, seed=40,
                    lyrics="la la la\nthe night is young", filename="song.wav")
    (found,) = reel.sections
    spans = [(s.start_s, s.end_s) for s in found.spans]
    assert found.seconds == pytest.approx(6.4, abs=0.01)
    assert len(spans) == 3 and spans[0][0] == 0 and spans[-1][1] == 7  # the song's whole seconds, rounded up
    assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(2))
    assert reel.order.index("sections") < reel.order.index("image")  # the sections come before any image
    assert any(e.stage == Stage.STAGE_SECTIONING for e in reel.events)
    assert reel.events[-1].stage == Stage.STAGE_DONE
    assert [(index, span) for index, span, _, _ in reel.images] == list(enumerate(spans))
    for index, span, png, metadata in reel.images:
        record = record_from_json(metadata)
        assert read_record(png) == record  # the PNG carries the record it was sent with
        assert (record.request.span.start_s, record.request.span.end_s) == span
        assert record.section.index == index and record.generation.seed == 40 + index == record.request.seed
        assert [(s.start_s, s.end_s) for s in record.section.spans] == spans
        assert record.section.words in ("transcript", "timed_lyrics", "salient")
        assert record.song.filename == "song.wav" and record.generation.width == 64


@pytest.mark.parametrize(("reel", "image", "words"), [
    ({"sections": 1}, {}, ("options.sections", "2..8", "got 1")),
    ({"sections": 12}, {}, ("options.sections", "2..8", "got 12")),
    ({"sections": 12, "max_sections": 12}, {}, ("options.sections", "need 96 s", "the song has 7 s")),
    ({"sections": -2}, {}, ("options.sections", "got -2")),
    ({"max_sections": 17}, {}, ("options.max_sections", "16", "got 17")),
    ({"min_section_seconds": -1}, {}, ("options.min_section_seconds", "got -1")),
    ({"min_section_seconds": 100_000}, {}, ("options.min_section_seconds", "got 100000")),
    ({}, {"span": orchestrator_pb2.Span(start_s=0, end_s=4)}, ("options.image.span", "must be unset")),
    ({}, {"steps": 10_000}, ("options.steps", "got 10000")),
], ids=["one-section", "over-max", "not-in-the-song", "negative", "max-over-limit", "min-negative", "min-too-long",
        "span", "steps"])
def test_bad_reel_options_are_invalid_argument_naming_the_field(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], song: bytes, cache: Path,
    reel: dict[str, Any], image: dict[str, Any], words: tuple[str, ...]
) -> None:
    orch = start_orchestrator(coarse_models, max_seconds=30.0, cache_dir=cache)
    with pytest.raises(grpc.RpcError) as info:
        run_reel(orch.address, song, reel, **image)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert all(word in info.value.details() for word in words), info.value.details()


def test_the_reels_own_options_are_refused_before_a_job_slot_and_a_reel_takes_one_slot(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], song: bytes, cache: Path
) -> None:
    """One slot (concurrency 1) held by a job whose upload has not come: a reel with bad options is refused at
    once, not queued; a good reel waits for the slot, then runs as one job while an image job waits."""
    orch = start_orchestrator(coarse_models, max_seconds=30.0, concurrency=1, max_queue=4, cache_dir=cache)
    release = threading.Event()
    short = encode_song("wav", 16000, 1, seconds=1.0)  # heard by the first job, from the cache by the last

    def held() -> Iterator[orchestrator_pb2.CreateImageRequest]:
        yield orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions(steps=1))
        release.wait(60)
        yield from list(requests(short))[1:]

    with grpc.insecure_channel(orch.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        holder = stub.CreateImage(held(), timeout=120)
        first = next(holder)  # the job runs: it holds the only slot, waiting for its song
        assert first.event.stage == Stage.STAGE_UPLOADING
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            run_reel(orch.address, song, {"sections": 40})
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and time.monotonic() - start < 5
        release.set()
        assert list(holder)[-1].WhichOneof("item") == "result"

    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(
        reel=run_reel(orch.address, song, {"sections": 2, "min_section_seconds": 2}, steps=10)))
    thread.start()
    deadline = time.monotonic() + 60
    while not _in_flight(orch, "CreateReel") and time.monotonic() < deadline:
        time.sleep(0.02)
    image = run_job(orch.address, short, seed=2, steps=1, timeout=300)
    thread.join(180)
    waited = [e.message for e in image.events if e.stage == Stage.STAGE_QUEUED]
    assert waited and "free job slot" in waited[0]  # the reel held the one slot until it ended
    assert len(outcome["reel"].images) == 2 and image.png


def _in_flight(service: RunningService, method: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "audiomemory_in_flight", {"service": "orchestrator", "method": method})
    return value or 0.0


def test_cancelling_a_reel_after_its_first_image_stops_its_painting(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], song: bytes, cache: Path
) -> None:
    # One section a Generate call: a cancel after the first image comes while the second is being painted, and
    # the third is never started (a batch of all three would be painted before the first image comes).
    orch = start_orchestrator(coarse_models, max_seconds=30.0, cache_dir=cache, reel_max_batch=1)
    generator = coarse_models["generator"]

    def generates() -> float:
        return sum(generator.metrics.registry.get_sample_value(
            "audiomemory_requests_total", {"service": "generator", "method": "Generate", "code": code}) or 0.0
            for code in ("OK", "CANCELLED"))

    before = generates()
    with grpc.insecure_channel(orch.address) as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateReel(
            reel_requests(song, {"sections": 3, "min_section_seconds": 2}, steps=30, width=64, height=64),
            timeout=300)
        for response in call:
            if response.WhichOneof("item") == "image" and response.image.last:
                call.cancel()
                break
    deadline = time.monotonic() + 20
    while _in_flight(orch, "CreateReel") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _in_flight(orch, "CreateReel") == 0
    time.sleep(0.5)
    assert generates() - before <= 2  # the first section's call and at most the one it had started next
    gauge = generator.metrics.registry.get_sample_value(
        "audiomemory_in_flight", {"service": "generator", "method": "Generate"})
    assert gauge == 0


def _generates(generator: RunningService) -> float:
    return generator.metrics.registry.get_sample_value(
        "audiomemory_requests_total", {"service": "generator", "method": "Generate", "code": "OK"}) or 0.0


def test_a_reels_sections_are_painted_in_batches_each_the_image_its_record_makes_alone(
    start_orchestrator: StartOrchestrator, coarse_models: dict[str, RunningService], song: bytes, cache: Path
) -> None:
    """The generator's ``max_batch`` sections in one ``Generate``; each image is the one its record's request (its
    span and seed, pinned to what served it, as ``reproduce`` sends it) paints alone, pixel for pixel."""
    from audiomemory.cli.reproduce import recorded_request

    orch = start_orchestrator(coarse_models, max_seconds=30.0, cache_dir=cache)
    with grpc.insecure_channel(orch.address) as channel:
        info = orchestrator_pb2_grpc.OrchestratorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=30)
    before = _generates(coarse_models["generator"])
    reel = run_reel(orch.address, song, {"sections": 3, "min_section_seconds": 2, "seed_per_section": True}, seed=5,
                    steps=2, lyrics="[Verse]\nlights on the water\n[Chorus]\nhold the night")
    assert _generates(coarse_models["generator"]) - before == math.ceil(3 / max(1, info.generator.max_batch))
    for _, span, png, metadata in reel.images:
        request = recorded_request(record_from_json(metadata))
        assert (request.span.start_s, request.span.end_s) == span

        def alone(request: orchestrator_pb2.CreateImageOptions = request) -> Iterator[Any]:
            yield orchestrator_pb2.CreateImageRequest(options=request)
            yield from list(requests(song))[1:]

        with grpc.insecure_channel(orch.address) as channel:
            made = bytearray()
            for response in orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(alone(), timeout=300):
                if response.WhichOneof("item") == "result":
                    made += response.result.png
        assert np.array_equal(_pixels(bytes(made)), _pixels(png)), f"section {span}"


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
