"""The shared service runtime, exercised through real services (tiny models) over real gRPC.

Health before/after load, bad input answered with clear statuses while the server keeps serving,
internals never leaking, the queue bound, the message-size limit, metrics, unknown backends,
and SIGTERM draining an in-flight call.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime import audio, codec
from audiomemory.runtime.errors import UnknownBackend
from audiomemory.runtime.registry import load_backend
from audiomemory.runtime.service import Gate, RunningService, start_service
from audiomemory.stack import definition
from audiomemory.v1 import (
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    separator_pb2,
    separator_pb2_grpc,
    tensor_pb2,
)

SERVICE = "audiomemory.v1.Generator"


@pytest.fixture(scope="module")
def generator(tiny: Callable[[str], dict[str, Any]]) -> Iterator[RunningService]:
    svc = start_service(definition("generator"), GeneratorConfig(port=0, metrics_port=0, **tiny("generator")),
                        wait=True)
    yield svc
    svc.stop(0)


@pytest.fixture(scope="module")
def separator(tiny: Callable[[str], dict[str, Any]]) -> Iterator[RunningService]:
    d = definition("separator")
    svc = start_service(d, d.config_class(port=0, max_seconds=2.0, **tiny("separator")), wait=True)
    yield svc
    svc.stop(0)


def _dim(svc: RunningService) -> int:
    return int(svc.backend.cross_attention_dim)  # type: ignore[attr-defined]


def _good_request(dim: int, steps: int = 2, **kw: Any) -> generator_pb2.GenerateRequest:
    embeds = codec.to_tensor(np.random.default_rng(0).standard_normal((1, 77, dim)).astype(np.float32))
    return generator_pb2.GenerateRequest(prompt_embeds=embeds, negative_prompt_embeds=embeds, steps=steps,
                                         width=64, height=64, seed=1, **kw)


def _generate(address: str, request: generator_pb2.GenerateRequest, timeout: float = 60) -> list[Any]:
    with grpc.insecure_channel(address) as channel:
        return list(generator_pb2_grpc.GeneratorStub(channel).Generate(request, timeout=timeout))


def _health(address: str) -> tuple[int, int]:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        own = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
        return overall, own


def test_health_is_not_serving_until_the_backend_has_loaded(tiny: Callable[[str], dict[str, Any]]) -> None:
    release = threading.Event()

    class SlowLoading(StableDiffusionBackend):
        def load(self) -> None:
            release.wait(30)
            super().load()

    config = GeneratorConfig(port=0, **tiny("generator"))
    svc = start_service(definition("generator"), config, SlowLoading(config))
    try:
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(svc.address) == (not_serving, not_serving)
        with grpc.insecure_channel(svc.address) as channel, pytest.raises(grpc.RpcError) as err:
            generator_pb2_grpc.GeneratorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in err.value.details()
        release.set()
        svc.wait_ready(30)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert _health(svc.address) == (serving, serving)
    finally:
        release.set()
        svc.stop(0)


def _with(dim: int, **fields: Any) -> generator_pb2.GenerateRequest:
    request = _good_request(dim)
    for name, value in fields.items():
        getattr(request, name).CopyFrom(value) if isinstance(value, tensor_pb2.Tensor) else setattr(
            request, name, value)
    return request


def _raw(shape: tuple, dtype: int = tensor_pb2.DTYPE_FLOAT32, nbytes: int | None = None) -> tensor_pb2.Tensor:
    n = int(np.prod(shape)) * 4 if nbytes is None else nbytes
    return tensor_pb2.Tensor(dtype=dtype, shape=shape, data=bytes(max(n, 0)))


def _bad_generate_requests(dim: int) -> list[tuple[str, generator_pb2.GenerateRequest, grpc.StatusCode, str]]:
    inv = grpc.StatusCode.INVALID_ARGUMENT
    nan = np.zeros((1, 77, dim), np.float32)
    nan[0, 3, 5] = np.nan
    return [
        ("wrong byte count", _with(dim, prompt_embeds=_raw((1, 77, dim), nbytes=10)), inv, "expected"),
        ("negative dim", _with(dim, prompt_embeds=_raw((1, -77, dim), nbytes=0)), inv, ">= 0"),
        ("unknown dtype", _with(dim, prompt_embeds=_raw((1, 77, dim), dtype=99)), inv, "wire value 99"),
        ("rank mismatch", _with(dim, prompt_embeds=_raw((77, dim))), inv, "expected rank 3"),
        ("NaN in embeddings", _with(dim, prompt_embeds=codec.to_tensor(nan)), inv, "finite"),
        ("int embeddings", _with(dim, prompt_embeds=codec.to_tensor(np.zeros((1, 77, dim), np.int32))), inv,
         "int32"),
        ("dim mismatch", _with(dim, prompt_embeds=codec.to_tensor(np.zeros((1, 77, dim + 1), np.float32))), inv,
         str(dim)),
        ("missing prompt", _with(dim, prompt_embeds=tensor_pb2.Tensor()), inv, "prompt_embeds"),
        ("steps too many", _with(dim, steps=10_000), inv, "steps"),
        ("odd size", _with(dim, width=65), inv, "width"),
        ("unknown scheduler", _with(dim, scheduler="warp-drive"), inv, "scheduler"),
    ]


def test_bad_generate_requests_get_clear_statuses_and_the_server_keeps_serving(generator: RunningService) -> None:
    dim = _dim(generator)
    cases = _bad_generate_requests(dim)
    for case, request, code, needle in cases:
        with pytest.raises(grpc.RpcError) as err:
            _generate(generator.address, request)
        assert err.value.code() == code, case
        assert needle in err.value.details(), (case, err.value.details())
        assert len(err.value.details()) < 400, case  # a sentence, never the payload
    responses = _generate(generator.address, _good_request(dim))
    assert responses[-1].image.last and responses[-1].image.png  # still serving
    assert generator.metrics.errors.labels("generator", "Generate", "INVALID_ARGUMENT")._value.get() >= len(cases)


def _audio_chunks(frames: int = 4410, rate: int = 44100, channels: int = 2) -> list[tensor_pb2.AudioChunk]:
    samples = np.random.default_rng(1).uniform(-0.5, 0.5, (channels, frames)).astype(np.float32)
    return list(audio.iter_audio_chunks(samples, rate, chunk_bytes=8192))


def _separate(address: str, chunks: list[tensor_pb2.AudioChunk]) -> list[separator_pb2.SeparateResponse]:
    requests = [separator_pb2.SeparateRequest(audio=c) for c in chunks]
    with grpc.insecure_channel(address) as channel:
        return list(separator_pb2_grpc.SeparatorStub(channel).Separate(iter(requests), timeout=60))


def test_bad_audio_streams_get_clear_statuses_and_the_server_keeps_serving(separator: RunningService) -> None:
    good = _audio_chunks()
    changed = _audio_chunks(rate=22050)
    nan = _audio_chunks()
    nan[1].samples.CopyFrom(codec.to_tensor(np.full((2, 100), np.nan, np.float32)))
    three = [tensor_pb2.AudioChunk(sample_rate=44100, channels=3,
                                   samples=codec.to_tensor(np.zeros((3, 100), np.float32)))]
    zero_rate = [tensor_pb2.AudioChunk(sample_rate=0, channels=1,
                                       samples=codec.to_tensor(np.zeros((1, 100), np.float32)))]
    inv, full = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    cases = [
        ("empty stream", [], inv, "empty"),
        ("format change mid-stream", [good[0], changed[1]], inv, "format changed mid-stream"),
        ("NaN samples", nan, inv, "finite"),
        ("three channels", three, inv, "expected 1 or 2, got 3"),
        ("zero sample rate", zero_rate, inv, "got 0"),
        ("over the duration cap", _audio_chunks(frames=44100 * 3), full, "limit"),
    ]
    for case, chunks, code, needle in cases:
        with pytest.raises(grpc.RpcError) as err:
            _separate(separator.address, chunks)
        assert err.value.code() == code, case
        assert needle in err.value.details(), (case, err.value.details())
    responses = _separate(separator.address, good)
    assert responses[0].served.identity and responses[1].header.stems  # still serving


def test_unexpected_failures_are_internal_without_leaking_details(tiny: Callable[[str], dict[str, Any]]) -> None:
    class Broken(StableDiffusionBackend):
        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret /etc/weights path")

    config = GeneratorConfig(port=0, **tiny("generator"))
    svc = start_service(definition("generator"), config, Broken(config), wait=True)
    try:
        with pytest.raises(grpc.RpcError) as err:
            _generate(svc.address, _good_request(_dim(svc)))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in err.value.details() and "request id" in err.value.details()
    finally:
        svc.stop(0)


def test_messages_over_the_size_limit_are_refused(generator: RunningService) -> None:
    big = _raw((1, 77 * 20, _dim(generator) * 40))  # > 4 MiB in one message
    with pytest.raises(grpc.RpcError) as err:
        _generate(generator.address, _with(_dim(generator), prompt_embeds=big))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_queue_bound_answers_resource_exhausted_then_recovers(tiny: Callable[[str], dict[str, Any]]) -> None:
    config = GeneratorConfig(port=0, concurrency=1, max_queue=0, **tiny("generator"))
    svc = start_service(definition("generator"), config, wait=True)
    try:
        dim = _dim(svc)
        channel = grpc.insecure_channel(svc.address)
        long_call = generator_pb2_grpc.GeneratorStub(channel).Generate(_good_request(dim, steps=150), timeout=120)
        next(long_call)  # running: holds the only slot
        with pytest.raises(grpc.RpcError) as err:
            _generate(svc.address, _good_request(dim))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queue=0" in err.value.details()
        long_call.cancel()
        deadline = time.monotonic() + 30
        while True:  # the slot frees within one denoising step of the cancel
            try:
                assert _generate(svc.address, _good_request(dim))[-1].image.last
                break
            except grpc.RpcError as again:
                assert again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.05)
        channel.close()
    finally:
        svc.stop(0)


def test_gate_admits_concurrency_plus_queue_and_refuses_the_next() -> None:
    gate = Gate(concurrency=1, max_queue=1)
    gate.ready.set()
    holding, waiting_started, release = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with gate.slot():
            holding.set()
            release.wait(10)

    def wait_in_queue() -> None:
        waiting_started.set()
        with gate.slot():
            pass

    threads = [threading.Thread(target=hold), threading.Thread(target=wait_in_queue)]
    threads[0].start()
    holding.wait(5)
    threads[1].start()
    waiting_started.wait(5)
    time.sleep(0.1)
    from audiomemory.runtime.errors import ResourceExhausted

    with pytest.raises(ResourceExhausted, match="1 waiting"), gate.slot():
        pass
    release.set()
    for t in threads:
        t.join(5)
    with gate.slot():  # free again
        pass


def test_metrics_endpoint_counts_requests_by_method_and_code(generator: RunningService) -> None:
    with grpc.insecure_channel(generator.address) as channel:
        generator_pb2_grpc.GeneratorStub(channel).Describe(common_pb2.DescribeRequest(), timeout=10)
    body = urllib.request.urlopen(f"http://127.0.0.1:{generator.metrics_port}/metrics", timeout=10).read().decode()
    assert re.search(r'audiomemory_requests_total\{code="OK",method="Describe",service="generator"\} [1-9]', body)
    assert "audiomemory_request_seconds_bucket" in body and "audiomemory_in_flight" in body
    assert 'audiomemory_model_ready{service="generator"} 1.0' in body


def test_unknown_backend_name_lists_the_installed_ones() -> None:
    with pytest.raises(UnknownBackend) as err:
        load_backend("generator", "dall-e")
    assert "'dall-e'" in str(err.value) and "stable-diffusion" in str(err.value)
    with pytest.raises(UnknownBackend, match="installed: demucs"):
        load_backend("separator", "spleeter")


def test_sigterm_lets_the_in_flight_call_finish(tiny: Callable[[str], dict[str, Any]]) -> None:
    overrides = tiny("generator")
    cmd = [sys.executable, "-m", "audiomemory.cli.main", "serve", "generator", "--port", "0",
           "--model", overrides["model"], "--grace-seconds", "240", "--torch-threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        address = re.search(r"listening on (\S+?)(,|$)", line.strip())
        assert address, (line, proc.stderr.read() if proc.poll() is not None else "")
        target = address.group(1)
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != 1:  # SERVING
                assert time.monotonic() < deadline
                time.sleep(0.1)
            stub = generator_pb2_grpc.GeneratorStub(channel)
            dim = stub.Describe(common_pb2.DescribeRequest(), timeout=10).cross_attention_dim
            call = stub.Generate(_good_request(dim, steps=12), timeout=300)
            assert next(call).WhichOneof("item") == "served"
            first = next(call)
            assert first.progress.step == 1
            proc.send_signal(signal.SIGTERM)
            rest = list(call)
        assert rest[-1].image.last and rest[-1].image.png.startswith(b"\x89PNG")
        last = [r.progress for r in rest if r.HasField("progress")][-1]
        assert last.step == last.total >= 12  # every step ran (PNDM adds one warm-up step)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_max_connection_age_closes_idle_client_connections(tiny: Callable[[str], dict[str, Any]]) -> None:
    """A recycled connection is what makes a DNS-resolved client notice replicas added by a scale-up."""
    config = GeneratorConfig(port=0, max_connection_age_seconds=0.5, grace_seconds=1, **tiny("generator"))
    svc = start_service(definition("generator"), config, wait=True)
    try:
        with grpc.insecure_channel(svc.address) as channel:
            states: list[grpc.ChannelConnectivity] = []
            channel.subscribe(states.append, try_to_connect=True)
            grpc.channel_ready_future(channel).result(timeout=10)
            deadline = time.monotonic() + 15
            while grpc.ChannelConnectivity.IDLE not in states[states.index(grpc.ChannelConnectivity.READY):]:
                assert time.monotonic() < deadline, states
                time.sleep(0.1)
    finally:
        svc.stop(0)
