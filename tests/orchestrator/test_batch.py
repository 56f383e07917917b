"""The job's stages paint a batch: the gRPC adapter sends it in one Generate call, the in-process adapter runs the
backend on it; both pass on each item's image in order, the image its prompt and seed paint alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from audiomemory.bench.inprocess import InProcessStages
from audiomemory.orchestrator.compatibility import Infos, batch_limit
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.downstream import Downstream
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.stages import Painted, Painting, Pin, Served, Step
from audiomemory.runtime.errors import ResourceExhausted
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import common_pb2, generator_pb2

KINDS = ("separator", "audio_encoder", "text_encoder", "generator")
SEEDS = (3, 1, 2**64 - 1)


def painting(count: int, seeds: tuple[int, ...] = (), seed: int = 0, dim: int = 32) -> Painting:
    rng = np.random.default_rng(count)
    prompt = rng.standard_normal((count, 77, dim)).astype(np.float32)
    negative = rng.standard_normal((1, 77, dim)).astype(np.float32)
    return Painting(prompt, negative, seed, 2, 7.5, 64, 64, "", seeds)


def item(batch: Painting, index: int) -> Painting:
    """Item ``index`` of ``batch`` as a one-image painting."""
    return Painting(batch.prompt_embeds[index:index + 1], batch.negative_prompt_embeds, batch.seeds[index],
                    batch.steps, batch.guidance, batch.width, batch.height, batch.scheduler)


def events(stream: Iterator[Any]) -> tuple[Served, list[Step], list[Painted]]:
    served = next(stream)
    assert isinstance(served, Served)
    rest = list(stream)
    return served, [e for e in rest if isinstance(e, Step)], [e for e in rest if isinstance(e, Painted)]


@pytest.fixture
def downstream(models: dict[str, RunningService]) -> Iterator[Downstream]:
    targets = {f"{kind}_target": models[kind].address for kind in KINDS}
    stages = Downstream(OrchestratorConfig(**targets))
    yield stages
    stages.close()


def test_the_grpc_adapter_sends_a_batch_and_passes_on_each_image_in_order(downstream: Downstream) -> None:
    job = Job(None, stall_seconds=60)
    batch = painting(len(SEEDS), SEEDS)
    served, steps, painted = events(downstream.generate(job, batch, Pin()))
    assert [p.index for p in painted] == [0, 1, 2] and served.resolved["batch"] == "3"
    alone = [events(downstream.generate(job, item(batch, i), Pin())) for i in range(len(SEEDS))]
    assert [p.png for p in painted] == [a[2][0].png for a in alone]
    assert [(s.step, s.total) for s in steps] == [(s.step, s.total) for s in alone[0][1]]  # one per step
    assert alone[0][2][0].index == 0 and "batch" not in alone[0][0].resolved


def test_the_grpc_adapter_keeps_a_request_under_the_message_limit(models: dict[str, RunningService]) -> None:
    gen = generator_pb2.GeneratorInfo(max_batch=8, max_length=77, cross_attention_dim=768)
    assert batch_limit(gen, 4 << 20) == 8
    assert batch_limit(gen, 2 << 20) == 4  # the orchestrator's own smaller limit lowers it
    assert batch_limit(generator_pb2.GeneratorInfo(max_length=77, cross_attention_dim=768), 4 << 20) == 1  # older
    targets = {f"{kind}_target": models[kind].address for kind in KINDS}
    small = Downstream(OrchestratorConfig(max_message_bytes=128 * 1024, **targets))
    try:
        infos = Infos(**{kind: getattr(small, kind).Describe(common_pb2.DescribeRequest(), timeout=10)
                         for kind in KINDS})
        assert small.max_batch(infos) == batch_limit(infos.generator, 128 * 1024) == 3  # 2 x 77 x 32 x 4 B each
        with pytest.raises(ResourceExhausted, match=r"max_message_bytes \(131072\)"):
            next(small.generate(Job(None, stall_seconds=60), painting(16, tuple(range(16))), Pin()))
    finally:
        small.close()


def test_the_in_process_adapter_paints_the_same_batch(models: dict[str, RunningService], downstream: Downstream
                                                      ) -> None:
    stages = InProcessStages(*(models[k].backend for k in KINDS), configs={k: models[k].config for k in KINDS})
    job = Job(None, stall_seconds=60)
    batch = painting(2, SEEDS[:2])
    served, _, local = events(stages.generate(job, batch, Pin()))
    _, _, remote = events(downstream.generate(job, batch, Pin()))
    assert [p.index for p in local] == [0, 1] and served.resolved["batch"] == "2"
    assert [p.png for p in local] == [p.png for p in remote]
    assert stages.max_batch(stages.describe(job)) == 8
