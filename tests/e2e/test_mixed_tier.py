"""A scaled generator tier whose replicas differ (one float32, one bfloat16) behind one round_robin target:
every image records the replica that painted it (its call header, not a Describe), `reproduce` of each is
pixel-exact (it pins the recorded identity; the retry policy finds the replica), and with the bfloat16
replica gone, reproducing its image says which identity is missing."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from audiomemory.cli.main import cli
from audiomemory.client import Client, read_record
from audiomemory.runtime.identity import identity
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.stack import definition
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

JOBS = 4


def _song(seconds: float = 1.0, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.4 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tier(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[dict[str, RunningService]]:
    """Separator, audio and text encoder; two generator replicas (float32, bfloat16); an orchestrator
    whose generator target names both replicas."""
    running: dict[str, RunningService] = {}
    try:
        for kind in ("separator", "audio_encoder", "text_encoder"):
            extra = {"hop_seconds": 0.5} if kind == "audio_encoder" else {}
            config = definition(kind).config_class(port=0, torch_threads=1, **tiny(kind), **extra)
            running[kind] = start_service(definition(kind), config)
        for precision in ("float32", "bfloat16"):
            config = definition("generator").config_class(port=0, torch_threads=1, precision=precision,
                                                          **tiny("generator"))
            running[precision] = start_service(definition("generator"), config)
        for service in running.values():
            service.wait_ready(300)
        targets = {f"{k}_target": running[k].address for k in ("separator", "audio_encoder", "text_encoder")}
        generators = f"ipv4:{running['float32'].address},{running['bfloat16'].address}"
        orchestrator = definition("orchestrator").config_class(
            port=0, generator_target=generators, transcriber_target="", caller_share=None,
            max_calls_per_caller=None, cache_dir=tmp_path_factory.mktemp("cache"), **targets)
        running["orchestrator"] = start_service(definition("orchestrator"), orchestrator)
        running["orchestrator"].wait_ready(120)
        yield running
    finally:
        for service in running.values():
            service.stop(0)


def _identity_of(service: RunningService) -> common_pb2.ModelInfo:
    import grpc

    with grpc.insecure_channel(service.address) as channel:
        info: generator_pb2.GeneratorInfo = generator_pb2_grpc.GeneratorStub(channel).Describe(
            common_pb2.DescribeRequest(), timeout=30)
    return info.model


def test_every_image_records_the_replica_that_painted_it_and_reproduces_exactly_until_it_is_gone(
    tier: dict[str, RunningService], tmp_path: Path
) -> None:
    models = {p: _identity_of(tier[p]) for p in ("float32", "bfloat16")}
    assert {m.dtype for m in models.values()} == {"float32", "bfloat16"}
    assert identity(models["float32"]) != identity(models["bfloat16"])
    song = tmp_path / "song.wav"
    song.write_bytes(_song())
    images: dict[str, Path] = {}
    with Client(tier["orchestrator"].address, timeout=300) as client:
        for i in range(JOBS):
            if i % 2:  # another client's Describe moves round_robin on by one (a job makes two generator calls)
                client.describe()
            before = {p: tier[p].metrics.request_count("Generate") for p in models}
            result = client.generate(song, seed=i, steps=2)
            painter = [p for p in models if tier[p].metrics.request_count("Generate") > before[p]]
            assert len(painter) == 1, painter
            record = read_record(result.png)
            assert record is not None
            served = record.served["generator"]
            assert served.identity == identity(models[painter[0]])  # the painter, whatever Describe says
            assert served.model.dtype == painter[0]
            assert record.generation.steps == int(served.resolved["steps"]) == 2
            path = tmp_path / f"image-{i}.png"
            path.write_bytes(result.png)
            images.setdefault(painter[0], path)
    assert set(images) == {"float32", "bfloat16"}  # round_robin reached both replicas

    address = tier["orchestrator"].address
    runner = CliRunner()
    for precision, image in images.items():
        outcome = runner.invoke(cli, ["reproduce", str(image), "--song", str(song), "--orchestrator", address])
        assert outcome.exit_code == 0, outcome.output
        assert "pixels match" in outcome.output, (precision, outcome.output)

    tier["bfloat16"].stop(0)
    outcome = runner.invoke(cli, ["reproduce", str(images["bfloat16"]), "--song", str(song),
                                  "--orchestrator", address])
    assert outcome.exit_code != 0
    assert "bfloat16" in outcome.output and identity(models["bfloat16"])[:12] in outcome.output, outcome.output
