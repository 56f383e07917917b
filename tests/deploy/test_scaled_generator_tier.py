"""The scaled diffusion tier on one machine: replicas behind one target, spread and failover.

The cluster runs N generator pods behind a headless Service; the orchestrator's
`dns:///` target resolves to every pod and the service config (round_robin +
retry on UNAVAILABLE / RESOURCE_EXHAUSTED) spreads calls and moves them off a
pod that goes away. Here the same thing runs locally: three generator replicas
(separate processes, tiny models) on distinct 127.0.0.1 ports behind one
multi-address target `ipv4:a,b,c`, with the service config read from
deploy/base, the file the cluster's ConfigMap is built from. Each replica's
request counter is read from its Prometheus endpoint.

Through the orchestrator, 15 jobs reach every replica, and taking two replicas
away mid-run (one with SIGTERM as on a pod deletion, then one with SIGKILL as on
a crash) fails none of them. The replicas are started once for the module; a
test replaces the ones the last test took away, and counts what each replica
served from its own start.
"""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from replicas import Replica, cluster_service_config, multi_address_target, start_generator_replicas

from audiomemory.client import Client
from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.v1 import generator_pb2, generator_pb2_grpc

# `make test-long`: three replicas' start is most of it (e2e/test_mixed_tier's two replicas stay in `make test`)
pytestmark = [pytest.mark.slow, pytest.mark.long]

REPLICAS = 3
JOBS = 15
CLIENT_THREADS = 3
STEPS = 2
ORCHESTRATED_STEPS = 6  # longer streams: a SIGKILL is likelier to cut one mid-way
SIZE = 64  # the tiny pipeline's native size


@pytest.fixture(scope="module")
def tiny_profile(tiny: Callable[[str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-service config overrides selecting the suite's tiny random-weight models."""
    from audiomemory.stack import MODEL_KINDS

    return {kind: tiny(kind) for kind in MODEL_KINDS}


@pytest.fixture(scope="module")
def tiny_generator(tiny_profile: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return tiny_profile["generator"]


@pytest.fixture(scope="module")
def upstream_services(tiny_profile: dict[str, dict[str, Any]]) -> Iterator[dict[str, RunningService]]:
    """Separator, audio encoder and text encoder (one each, in this process, tiny models)."""
    from audiomemory.stack import definition

    running: dict[str, RunningService] = {}
    try:
        for kind in ("separator", "audio_encoder", "text_encoder"):
            d = definition(kind)
            config = d.config_class(port=0, torch_threads=1, **tiny_profile[kind])
            running[kind] = start_service(d, config)
        for service in running.values():
            service.wait_ready(300)
        yield running
    finally:
        for service in running.values():
            service.stop(1)


@pytest.fixture(scope="module")
def audio_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One orchestrator cache for the module: the song is separated and embedded once."""
    return tmp_path_factory.mktemp("audio-cache")


def song_wav(seconds: float = 1.0, rate: int = 22050) -> bytes:
    """A short stereo WAV: two tones and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(1)
    left = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    frames = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def replica_pool(tiny_generator: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """``REPLICAS`` replicas for the module (a test may take one away: the next test gets a new one)."""
    logs = tmp_path_factory.mktemp("replicas")
    pool = start_generator_replicas(REPLICAS, tiny_generator, logs, torch_threads=1, grace_seconds=20)
    try:
        yield pool
    finally:
        for replica in pool:
            replica.close()


@pytest.fixture
def replicas(replica_pool: list[Replica], tiny_generator: dict[str, Any], tmp_path: Path) -> list[Replica]:
    """Three live replicas: the ones a last test stopped replaced by new ones."""
    for i, replica in enumerate(replica_pool):
        if replica.proc.poll() is not None:
            replica.close()
            replica_pool[i] = start_generator_replicas(1, tiny_generator, tmp_path, torch_threads=1,
                                                       grace_seconds=20)[0]
    return list(replica_pool)


def channel_options() -> list[tuple[str, Any]]:
    return [("grpc.service_config", cluster_service_config()), ("grpc.enable_retries", 1)]


def run_jobs(
    job: Callable[[int], None], *, on_progress: Callable[[int], None] | None = None
) -> tuple[int, list[BaseException]]:
    """Run ``JOBS`` jobs on ``CLIENT_THREADS`` threads; return (completed, errors)."""
    done = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def one(i: int) -> None:
        nonlocal done
        try:
            job(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            done += 1
            finished = done
        if on_progress is not None:
            on_progress(finished)

    # The first job alone: it fills the orchestrator's audio cache (and warms every lazy path), so the
    # rest measure the generator tier, not three concurrent separations of the same song.
    one(0)
    with futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(one, range(1, JOBS)))
    return done, errors


class Terminator:
    """Stops one replica (SIGTERM, or SIGKILL) once ``after`` jobs have finished; records the moment."""

    def __init__(self, victim: Replica, after: int, others: list[Replica], *, kill: bool = False) -> None:
        self.victim = victim
        self.kill = kill
        self.after = after
        self.others = others
        self.fired = threading.Event()
        self.victim_served_before = 0
        self.others_served_at_kill = 0
        self.completed_at_kill = 0
        # What each replica served before this test (a replica may have served the module's last test).
        self.start = {id(r): r.served() for r in (victim, *others)}

    def served(self, replica: Replica) -> int:
        """Calls ``replica`` served during this test."""
        return replica.served() - self.start[id(replica)]

    def __call__(self, finished: int) -> None:
        if finished >= self.after and not self.fired.is_set():
            self.fired.set()
            self.victim_served_before = self.served(self.victim)
            self.others_served_at_kill = sum(self.served(r) for r in self.others)
            self.completed_at_kill = finished
            if self.kill:
                self.victim.kill()
            else:
                self.victim.terminate()


def test_generator_tier_spreads_calls_over_every_replica_and_survives_a_terminated_one(
    replicas: list[Replica],
) -> None:
    target = multi_address_target([r.address for r in replicas])
    rng = np.random.default_rng(0)
    embeds = to_tensor(rng.standard_normal((1, 77, 32)).astype(np.float32))
    negative = to_tensor(np.zeros((1, 77, 32), np.float32))
    victim, others = replicas[1], [replicas[0], replicas[2]]
    terminator = Terminator(victim, after=JOBS // 3, others=others)

    with grpc.insecure_channel(target, options=channel_options()) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)

        def job(i: int) -> None:
            request = generator_pb2.GenerateRequest(
                prompt_embeds=embeds, negative_prompt_embeds=negative, seed=i, steps=STEPS, width=SIZE, height=SIZE
            )
            png = b"".join(r.image.png for r in stub.Generate(request, timeout=120) if r.HasField("image"))
            assert png.startswith(b"\x89PNG")

        done, errors = run_jobs(job, on_progress=terminator)

    assert not errors, f"{len(errors)} of {JOBS} jobs failed, first: {errors[0]!r}"
    assert done == JOBS
    assert terminator.fired.is_set()
    # The terminated replica drained and exited cleanly (SIGTERM, like a pod deletion).
    assert victim.wait_exit(30) == 0
    assert terminator.victim_served_before > 0
    served = [terminator.served(r) for r in others]
    assert all(n > 0 for n in served), served
    # Every job that had not finished when the replica went away was served by the others.
    assert sum(served) - terminator.others_served_at_kill >= JOBS - terminator.completed_at_kill - CLIENT_THREADS


def test_orchestrator_jobs_reach_every_replica_and_losing_two_fails_none(
    replicas: list[Replica],
    upstream_services: dict[str, RunningService],
    audio_cache: Path,
) -> None:
    """A third of the way through, one replica is terminated (SIGTERM, as on a pod deletion: it drains); two
    thirds of the way, another is killed (SIGKILL, as on a crash: calls on it are cut). No job fails."""
    from audiomemory.orchestrator.config import OrchestratorConfig
    from audiomemory.orchestrator.service import DEFINITION

    config = OrchestratorConfig(
        port=0,
        separator_target=upstream_services["separator"].address,
        audio_encoder_target=upstream_services["audio_encoder"].address,
        text_encoder_target=upstream_services["text_encoder"].address,
        generator_target=multi_address_target([r.address for r in replicas]),
        service_config=cluster_service_config(),
        cache_dir=audio_cache,
        concurrency=CLIENT_THREADS,
        caller_share=None,  # the client threads stand for many callers, all from 127.0.0.1
        max_calls_per_caller=None,
    )
    orchestrator = start_service(DEFINITION, config, wait=True, wait_timeout=300)
    song = song_wav()
    survivor, terminated, killed = replicas
    first = Terminator(terminated, after=JOBS // 3, others=[survivor, killed])
    second = Terminator(killed, after=2 * JOBS // 3, others=[survivor], kill=True)
    try:
        with Client(orchestrator.address, timeout=300) as client:

            def job(i: int) -> None:
                result = client.generate(
                    song, lyrics="la la la\nla la la\nhold on", seed=i, steps=ORCHESTRATED_STEPS, filename="song.wav"
                )
                assert result.png.startswith(b"\x89PNG")
                assert result.metadata, "the orchestrator returns the reproduction metadata"

            done, errors = run_jobs(job, on_progress=lambda finished: (first(finished), second(finished)))
    finally:
        orchestrator.stop(5)

    assert not errors, f"{len(errors)} of {JOBS} jobs failed, first: {errors[0]!r}"
    assert done == JOBS
    assert first.fired.is_set() and second.fired.is_set()
    assert (terminated.wait_exit(30), killed.wait_exit(30)) == (0, -9)
    assert first.victim_served_before > 0 and second.victim_served_before > 0
    last = first.served(survivor)
    assert last > 0
    # Every job not finished when a replica went away was served by those left (less the calls in flight).
    assert last + second.victim_served_before - first.others_served_at_kill >= (
        JOBS - first.completed_at_kill - CLIENT_THREADS)
    assert last - second.others_served_at_kill >= JOBS - second.completed_at_kill - CLIENT_THREADS
