"""The orchestrator over real gRPC in front of the four tiny model services."""

from __future__ import annotations

import hashlib
import io
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from audiomemory.client import read_record, record_from_json
from audiomemory.orchestrator.lyrics import salient_window
from audiomemory.runtime import codec
from audiomemory.runtime.identity import identity
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import (
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    text_encoder_pb2,
    text_encoder_pb2_grpc,
)

from .conftest import StartOrchestrator, requests, run_job
from .songs import encode_song

Stage = orchestrator_pb2.Stage
LYRICS = "[Chorus]\nHold me now\nUnder the lights\nHold me now\n[Verse]\nWalking alone\n"


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _stages(result: Any) -> list[int]:
    stages: list[int] = []
    for event in result.events:
        if not stages or stages[-1] != event.stage:
            stages.append(event.stage)
    return stages


@pytest.mark.parametrize(
    ("ext", "rate", "channels"),
    [("mp3", 44100, 2), ("flac", 22050, 1), ("ogg", 32000, 2), ("m4a", 48000, 1), ("wav", 24000, 2),
     ("wav", 22050, 1), ("opus", 48000, 2)],
)
def test_song_in_any_common_format_becomes_a_png_with_metadata(
    orchestrator: RunningService, ext: str, rate: int, channels: int
) -> None:
    data = encode_song(ext, rate, channels, seconds=0.5, seed=hash(ext) % 5)
    result = run_job(orchestrator.address, data, lyrics=LYRICS, seed=3, filename=f"song.{ext}")

    assert _stages(result) == [
        Stage.STAGE_UPLOADING, Stage.STAGE_DECODING, Stage.STAGE_SEPARATING, Stage.STAGE_EMBEDDING,
        Stage.STAGE_ENCODING_TEXT, Stage.STAGE_FUSING, Stage.STAGE_GENERATING, Stage.STAGE_DONE,
    ]
    embedding = [e for e in result.events if e.stage == Stage.STAGE_EMBEDDING]
    # frames embedded over the four stems, rising to the total the audio encoder announced
    assert embedding and embedding[-1].current == embedding[-1].total > 0
    assert [e.current for e in embedding] == sorted(e.current for e in embedding)
    # steps of the 2 asked, though a scheduler may run one more denoising call (PNDM's warm-up)
    steps = [(e.current, e.total) for e in result.events if e.stage == Stage.STAGE_GENERATING]
    assert steps[0] == (0, 2) and steps[-1] == (2, 2)
    assert [c for c, _ in steps] == sorted(c for c, _ in steps) and {t for _, t in steps} == {2}
    calls = len(steps) - 1

    image = result.image
    assert image.format == "PNG" and image.size[0] > 0
    meta = read_record(result.png)
    assert meta is not None and meta == record_from_json(result.metadata_json)
    assert meta.song.sha256 == hashlib.sha256(data).hexdigest()
    assert (meta.song.sample_rate, meta.song.channels) == (rate, channels)
    assert meta.lyrics.text == salient_window(LYRICS) == "Hold me now, Under the lights, Walking alone"
    assert meta.generation.seed == 3 and meta.generation.steps == 2
    assert meta.generation.denoising_steps == calls >= 2
    assert meta.fusion.strength == pytest.approx(0.1) and meta.cache_hit is False
    # stems were asked for in the audio encoder's own format: its rate, mono, float16 on the wire
    with grpc.insecure_channel(orchestrator.address) as channel:
        encoder = orchestrator_pb2_grpc.OrchestratorStub(channel).Describe(common_pb2.DescribeRequest()).audio_encoder
    assert (meta.stem_format.sample_rate, meta.stem_format.channels, meta.stem_format.dtype) == (
        encoder.sample_rate, encoder.channels, "float16")
    for kind in ("separator", "audio_encoder", "text_encoder", "generator", "orchestrator"):
        assert meta.served[kind].model.model_id and meta.served[kind].identity == identity(meta.served[kind].model)
    sent = meta.request
    assert sent.seed == 3 and sent.steps == 2 and sent.lyrics == LYRICS and sent.filename == f"song.{ext}"
    assert sent.HasField("strength") and sent.HasField("projection_seed") and sent.lyrics_window == "salient"
    params = image.text["parameters"]  # type: ignore[attr-defined]
    assert params.startswith("Hold me now, Under the lights, Walking alone\nNegative prompt: \nSteps: 2")
    assert "Seed: 3" in params and f"Song hash: {meta.song.sha256}" in params


def test_alpha_zero_image_equals_plain_lyrics_only_generation(
    orchestrator: RunningService, models: dict[str, RunningService]
) -> None:
    data = encode_song("wav", 22050, 1, seconds=0.5, seed=7)
    result = run_job(orchestrator.address, data, lyrics=LYRICS, seed=11, strength=0.0)
    fused = run_job(orchestrator.address, data, lyrics=LYRICS, seed=11, strength=1.0)

    with grpc.insecure_channel(models["text_encoder"].address) as text_ch, \
            grpc.insecure_channel(models["generator"].address) as gen_ch:
        encoded = list(text_encoder_pb2_grpc.TextEncoderStub(text_ch).Encode(
            text_encoder_pb2.EncodeRequest(texts=[salient_window(LYRICS), ""]), timeout=60))
        embeddings = codec.assemble_tensor(
            (r.embeddings for r in encoded if r.WhichOneof("item") == "embeddings"), "embeddings", max_bytes=1 << 24
        )
        png = bytearray()
        for response in generator_pb2_grpc.GeneratorStub(gen_ch).Generate(
            generator_pb2.GenerateRequest(
                prompt_embeds=codec.to_tensor(np.ascontiguousarray(embeddings[0:1])),
                negative_prompt_embeds=codec.to_tensor(np.ascontiguousarray(embeddings[1:2])),
                seed=11, steps=2,
            ),
            timeout=60,
        ):
            if response.WhichOneof("item") == "image":
                png += response.image.png
    np.testing.assert_array_equal(_pixels(result.png), _pixels(bytes(png)))
    assert not np.array_equal(_pixels(fused.png), _pixels(bytes(png)))  # the audio does steer at α=1


def test_metadata_request_alone_reproduces_the_pixels(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    data = encode_song("ogg", 44100, 2, seconds=0.5, seed=2)
    first = run_job(start_orchestrator(models).address, data, lyrics=LYRICS, seed=9, strength=0.6,
                    projection_seed=4, keep_bos=True, negative_prompt="blurry")
    meta = read_record(first.png)
    assert meta is not None
    options = meta.request
    fresh = start_orchestrator(models)  # another orchestrator, empty cache: everything recomputed
    again = run_job(fresh.address, data, **{f.name: value for f, value in options.ListFields()})
    np.testing.assert_array_equal(_pixels(first.png), _pixels(again.png))
    second = read_record(again.png)
    assert second is not None
    assert second.fusion == meta.fusion and second.lyrics == meta.lyrics


def test_second_run_with_another_seed_is_a_cache_hit(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models)
    data = encode_song("flac", 44100, 2, seconds=0.5, seed=3)
    first = run_job(orch.address, data, lyrics=LYRICS, seed=1)
    separations = models["separator"].request_count("Separate")
    embeds = models["audio_encoder"].request_count("Embed")
    second = run_job(orch.address, data, lyrics=LYRICS, seed=2)

    assert models["separator"].request_count("Separate") == separations
    assert models["audio_encoder"].request_count("Embed") == embeds
    hits = [e for e in second.events if e.cache_hit]
    assert len(hits) == 1 and hits[0].message == "cache hit"
    assert Stage.STAGE_SEPARATING not in _stages(second)
    assert not any(e.cache_hit for e in first.events)
    meta1, meta2 = record_from_json(first.metadata_json), record_from_json(second.metadata_json)
    assert meta2.cache_hit is True
    assert meta1.fusion.audio_vector_sha256 == meta2.fusion.audio_vector_sha256
    assert not np.array_equal(_pixels(first.png), _pixels(second.png))  # another seed, another image


def test_corrupt_cache_entry_is_recomputed(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models)
    data = encode_song("wav", 22050, 1, seconds=0.5, seed=9)
    first = run_job(orch.address, data, seed=1)
    cache_dir = orch.config.cache_dir  # type: ignore[attr-defined]
    (entry,) = list(cache_dir.glob("*/*.amc"))
    blob = bytearray(entry.read_bytes())
    blob[-10] ^= 0xFF
    entry.write_bytes(bytes(blob))
    separations = models["separator"].request_count("Separate")
    second = run_job(orch.address, data, seed=1)
    assert models["separator"].request_count("Separate") == separations + 1
    assert not any(e.cache_hit for e in second.events)
    np.testing.assert_array_equal(_pixels(first.png), _pixels(second.png))


def _in_flight(service: RunningService, method: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "audiomemory_in_flight", {"service": service.definition.kind, "method": method}
    )
    return value or 0.0


def _settle(busy: Callable[[], bool], quiet: float, timeout: float) -> None:
    """Wait until ``busy()`` has stayed False for ``quiet`` seconds (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if busy():
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= quiet:
            return
        time.sleep(0.05)


def _code_count(service: RunningService, method: str, code: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "audiomemory_requests_total", {"service": service.definition.kind, "method": method, "code": code}
    )
    return value or 0.0


def test_cancelling_mid_generation_stops_the_generator(
    orchestrator: RunningService, models: dict[str, RunningService]
) -> None:
    generator = models["generator"]
    cancelled_before = _code_count(generator, "Generate", "CANCELLED")
    data = encode_song("wav", 22050, 1, seconds=0.5, seed=4)
    with grpc.insecure_channel(orchestrator.address) as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(
            requests(data, seed=5, steps=150), timeout=120
        )
        for response in call:
            event = response.event if response.WhichOneof("item") == "event" else None
            if event is not None and event.stage == Stage.STAGE_GENERATING and event.current >= 1:
                call.cancel()
                break
    deadline = time.monotonic() + 10
    while _code_count(generator, "Generate", "CANCELLED") == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _code_count(generator, "Generate", "CANCELLED") == cancelled_before + 1
    gauge = generator.metrics.registry.get_sample_value(
        "audiomemory_in_flight", {"service": "generator", "method": "Generate"}
    )
    assert gauge == 0
    # and the orchestrator keeps serving
    assert run_job(orchestrator.address, data, seed=5).png


def test_cancelling_during_separation_leaves_no_downstream_work_running(
    orchestrator: RunningService, models: dict[str, RunningService]
) -> None:
    data = encode_song("wav", 22050, 2, seconds=4.0, seed=6)  # a new song: no cache hit
    ok_embeds = _code_count(models["audio_encoder"], "Embed", "OK")
    with grpc.insecure_channel(orchestrator.address) as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(requests(data, seed=5), timeout=120)
        for response in call:
            if response.WhichOneof("item") == "event" and response.event.stage == Stage.STAGE_SEPARATING:
                call.cancel()
                break

    def busy() -> dict[str, float]:
        calls = {
            f"{kind}.{method}": svc.metrics.registry.get_sample_value(
                "audiomemory_in_flight", {"service": kind, "method": method}
            ) or 0.0
            for kind, svc in models.items()
            for method in ("Separate", "Embed", "Encode", "Generate")
        }
        return {call: count for call, count in calls.items() if count}

    # The first SEPARATING event comes before the job opens its separator call, and its text encoder call
    # runs in a pool thread: the job learns of the cancel asynchronously and may still open a downstream call
    # after it (cancelled at once, but the service has started). So "no call in flight" right after the
    # cancel proves nothing: wait until the job has ended and every service has stayed idle for a second.
    _settle(lambda: bool(busy()) or _in_flight(orchestrator, "CreateImage") > 0, quiet=1.0, timeout=10)
    assert busy() == {}
    assert _code_count(models["audio_encoder"], "Embed", "OK") == ok_embeds  # no stem finished embedding
    assert run_job(orchestrator.address, encode_song("wav", 16000, 1, seconds=0.5), seed=1).png


def test_stopped_service_gives_unavailable_naming_it(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService], tiny: Any
) -> None:
    from audiomemory.stack import definition

    d = definition("text_encoder")
    spare = d.config_class(port=0, device="cpu", torch_threads=1, **tiny("text_encoder"))
    from audiomemory.runtime.service import start_service

    text = start_service(d, spare, wait=True, wait_timeout=120)
    orch = start_orchestrator({**models, "text_encoder": text})
    data = encode_song("wav", 22050, 1, seconds=0.5)
    assert run_job(orch.address, data, seed=1).png
    text.stop(0)
    with pytest.raises(grpc.RpcError) as info:
        run_job(orch.address, data, seed=1)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "text encoder" in info.value.details() and text.address in info.value.details()


def test_text_encoder_of_another_width_gives_failed_precondition(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService], tmp_path: Any, tiny: Any
) -> None:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from audiomemory.runtime.service import start_service
    from audiomemory.stack import definition

    overrides = tiny("text_encoder")
    folder = tmp_path / "wide"
    import shutil

    shutil.copytree(overrides["model"], folder)
    config = CLIPTextConfig.from_pretrained(str(folder / "text_encoder"))
    config.hidden_size = 48
    torch.manual_seed(0)
    CLIPTextModel(config).save_pretrained(str(folder / "text_encoder"))
    d = definition("text_encoder")
    wide = start_service(
        d, d.config_class(port=0, device="cpu", torch_threads=1, **{**overrides, "model": str(folder)}),
        wait=True, wait_timeout=120,
    )
    try:
        orch = start_orchestrator({**models, "text_encoder": wide}, wait=False)
        with pytest.raises(Exception, match="48-d") as loading:
            orch.wait_ready(60)
        assert "generator" in str(loading.value)
        with pytest.raises(grpc.RpcError) as info:
            run_job(orch.address, encode_song("wav", 22050, 1, seconds=1.0), seed=1)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = info.value.details()
        assert "text encoder" in details and "generator" in details and "48" in details and "32" in details
    finally:
        wide.stop(0)


def _truncated_m4a() -> bytes:
    data = encode_song("m4a", 44100, 2, seconds=2.0)
    return data[: len(data) // 2]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


BAD_UPLOADS = [
    ("empty", lambda: b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("text", lambda: b"not a song at all\n" * 50, grpc.StatusCode.INVALID_ARGUMENT, "not an audio file"),
    ("image", _png, grpc.StatusCode.INVALID_ARGUMENT, "no audio stream"),
    ("truncated", _truncated_m4a, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    ("over-size", lambda: bytes(2_000_001), grpc.StatusCode.RESOURCE_EXHAUSTED, "upload limit of 2000000 bytes"),
    ("over-length", lambda: encode_song("wav", 8000, 1, seconds=9.0), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "over the limit of 8 s"),
]


@pytest.mark.parametrize(("name", "make", "code", "words"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_get_clear_statuses_and_the_orchestrator_keeps_serving(
    orchestrator: RunningService, name: str, make: Any, code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        run_job(orchestrator.address, make(), seed=1)
    assert info.value.code() is code
    assert words in info.value.details()
    assert run_job(orchestrator.address, encode_song("wav", 16000, 1, seconds=0.5), seed=1).png


@pytest.mark.parametrize(("ext", "seconds", "bit_rate"), [("wav", 60.0, None), ("flac", 60.0, None),
                                                         ("mp3", 60.0, 160_000)])
def test_a_song_over_the_length_limit_is_refused_before_its_upload_ends(
    orchestrator: RunningService, ext: str, seconds: float, bit_rate: int | None
) -> None:
    # Against the fixture's 8 s limit: the sender stops after ~384 KiB and waits; the refusal must come
    # from what arrived (the server cannot be waiting for the rest, which would never come). (The MP3 at
    # 160 kbit/s: over twice 384 KiB in 60 s, where LAME's default for 16 kHz mono, 24 kbit/s, needs 300 s.)
    data = encode_song(ext, 16000, 1, seconds=seconds, bit_rate=bit_rate)
    refused = threading.Event()
    sent: list[int] = []

    def upload() -> Any:
        yield orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions(seed=1, filename="x"))
        for start in range(0, len(data), 64 * 1024):
            if sum(sent) >= 384 * 1024 and not refused.wait(20):
                return
            sent.append(len(data[start : start + 64 * 1024]))
            yield orchestrator_pb2.CreateImageRequest(file_chunk=data[start : start + 64 * 1024])

    assert len(data) > 2 * 384 * 1024
    with grpc.insecure_channel(orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            for _ in stub.CreateImage(upload(), timeout=15):
                pass
        refused.set()
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert "over the limit of 8 s" in info.value.details()
    assert sum(sent) < len(data)


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"strength": 1.5}, "options.strength"),
    ({"strength": math.nan}, "options.strength"),
    ({"steps": 1000}, "options.steps"),
    ({"guidance": 31.0}, "options.guidance"),
    ({"width": 100}, "options.width"),
    ({"height": 4096}, "options.height"),
    ({"lyrics_window": "chorus"}, "options.lyrics_window"),
    ({"scheduler": "no-such-scheduler"}, "options.scheduler"),
    ({"lyrics": "la " * 40_000}, "options.lyrics"),
]


@pytest.mark.parametrize(("options", "words"), BAD_OPTIONS, ids=[w for _, w in BAD_OPTIONS])
def test_absurd_options_are_invalid_argument_naming_the_field(
    orchestrator: RunningService, options: dict[str, Any], words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        run_job(orchestrator.address, encode_song("wav", 16000, 1, seconds=0.5), **{"seed": 1, **options})
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


def test_stream_without_options_first_is_invalid(orchestrator: RunningService) -> None:
    def no_options() -> Any:
        yield orchestrator_pb2.CreateImageRequest(file_chunk=b"abc")

    def twice() -> Any:
        yield orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions())
        yield orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions())

    with grpc.insecure_channel(orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for stream, words in ((no_options, "first CreateImageRequest must carry options"), (twice, "only once")):
            with pytest.raises(grpc.RpcError) as info:
                list(stub.CreateImage(stream(), timeout=30))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert words in info.value.details()


def test_describe_reports_every_service(orchestrator: RunningService, models: dict[str, RunningService]) -> None:
    with grpc.insecure_channel(orchestrator.address) as channel:
        info = orchestrator_pb2_grpc.OrchestratorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=30)
    assert info.model.service == "orchestrator"
    assert list(info.separator.stems) and info.audio_encoder.embedding_dim > 0
    assert info.text_encoder.hidden_size == info.generator.cross_attention_dim


def test_deadline_reaches_downstream_calls(
    orchestrator: RunningService, models: dict[str, RunningService]
) -> None:
    generator = models["generator"]
    finished_before = generator.request_count("Generate")
    ok_before = _code_count(generator, "Generate", "OK")
    data = encode_song("wav", 22050, 1, seconds=0.5, seed=8)
    run_job(orchestrator.address, data, seed=1, steps=1)  # warm: the cache holds this song's audio vector
    ok_before += 1
    finished_before += 1
    with pytest.raises(grpc.RpcError) as info:
        # 150 steps at 128² (4x the tiny model's native 64²): ~0.5 s a step on a 2-core EPYC, over a minute in
        # all. (Not 256²: a step there takes 5 s idle and 10-25 s under load, and the generator can stop only
        # between steps, so "soon after the deadline" would need a wait longer than a loaded step.)
        run_job(orchestrator.address, data, seed=1, steps=150, width=128, height=128, timeout=2.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    failed = time.monotonic()
    # within a step or two even on a loaded machine (~2 s a step at load 7 on 2 cores), not the 60+ s of 150
    while generator.request_count("Generate") == finished_before and time.monotonic() - failed < 15:
        time.sleep(0.05)
    # the generator's call ended (not OK) soon after the deadline instead of running 150 steps
    assert generator.request_count("Generate") == finished_before + 1
    assert _code_count(generator, "Generate", "OK") == ok_before


# When the replica dies: after its header, before the first step is done (128²: ~0.5 s a step), or two steps in.
DYING = [pytest.param("after_its_header", 0, {"steps": 3, "width": 128, "height": 128}, id="after_its_header"),
         pytest.param("two_steps_in", 2, {"steps": 12}, id="two_steps_in", marks=pytest.mark.long)]


@pytest.mark.parametrize(("when", "at_step", "settings"), DYING)
def test_generator_replica_dying_mid_stream_is_retried_on_another(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService], tiny: Any, when: str, at_step: int,
    settings: dict[str, int],
) -> None:
    """Either way gRPC cannot retry the call (a reply came: it is committed); the orchestrator calls again."""
    from audiomemory.runtime.service import start_service
    from audiomemory.stack import definition

    d = definition("generator")
    replicas = [
        start_service(d, d.config_class(port=0, device="cpu", torch_threads=1, **tiny("generator")),
                      wait=True, wait_timeout=120)
        for _ in range(2)
    ]
    try:
        target = "ipv4:" + ",".join(r.address for r in replicas)
        orch = start_orchestrator({**models}, generator_target=target)
        data = encode_song("wav", 22050, 1, seconds=0.5, seed=12)
        reference = run_job(orch.address, data, seed=21, **settings)
        killed: list[RunningService] = []
        events = []
        png = bytearray()
        with grpc.insecure_channel(orch.address) as channel:
            call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(
                requests(data, seed=21, **settings), timeout=120
            )
            for response in call:
                if response.WhichOneof("item") == "result":
                    png += response.result.png
                    continue
                events.append(response.event)
                if not killed and response.event.stage == Stage.STAGE_GENERATING and response.event.current >= at_step:
                    busy = [r for r in replicas if r.metrics.registry.get_sample_value(
                        "audiomemory_in_flight", {"service": "generator", "method": "Generate"}) == 1]
                    assert len(busy) == 1
                    busy[0].stop(0)  # the replica dies mid-stream
                    killed.append(busy[0])
        assert killed
        assert any("retrying (attempt 2/" in e.message for e in events)
        # deterministic given the seed: the retried image is the undisturbed one
        np.testing.assert_array_equal(_pixels(bytes(png)), _pixels(reference.png))
    finally:
        for r in replicas:
            r.stop(0)


def test_orchestrator_is_not_serving_until_every_service_answers(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService], tiny: Any
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from audiomemory.runtime.service import start_service
    from audiomemory.stack import definition

    d = definition("text_encoder")
    with socket.socket() as probe:  # a port the system had free; nothing listens on it once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    orch = start_orchestrator(models, text_encoder_target=f"127.0.0.1:{port}", wait=False)
    with grpc.insecure_channel(orch.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="audiomemory.v1.Orchestrator"), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            run_job(orch.address, encode_song("wav", 16000, 1, seconds=0.5), seed=1)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as described:
            orchestrator_pb2_grpc.OrchestratorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=30)
        assert described.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "text encoder" in (described.value.details() or "")
        # the text encoder comes (back) up on the same address: the orchestrator becomes ready
        second = start_service(
            d, d.config_class(port=port, device="cpu", torch_threads=1, **tiny("text_encoder")),
            wait=True, wait_timeout=120,
        )
        try:
            orch.wait_ready(30)
            status = health.Check(health_pb2.HealthCheckRequest(service="audiomemory.v1.Orchestrator"), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            assert run_job(orch.address, encode_song("wav", 16000, 1, seconds=0.5), seed=1).png
        finally:
            second.stop(0)
