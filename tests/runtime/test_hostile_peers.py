"""Hostile peers of any service (issue 20, classes 1 and 3): nothing a peer sends, withholds or leaves unread
holds memory, a thread or a model slot without bound. A real separator (tiny model) over real gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.stack import definition
from audiomemory.v1 import separator_pb2, separator_pb2_grpc


@pytest.fixture(scope="module")
def separator(tiny: Callable[[str], dict[str, Any]]) -> Iterator[RunningService]:
    """Short windows so a stalled peer is dropped within a second or two."""
    d = definition("separator")
    svc = start_service(d, d.config_class(port=0, health_port=0, max_seconds=20.0, request_window_seconds=1.0,
                                          send_timeout_seconds=1.0, max_queue=2, **tiny("separator")), wait=True)
    yield svc
    svc.stop(0)


def _audio(seconds: float, rate: int = 44100) -> list[separator_pb2.SeparateRequest]:
    samples = np.random.default_rng(0).standard_normal((2, int(rate * seconds))).astype(np.float32) * 0.1
    return [separator_pb2.SeparateRequest(audio=c) for c in iter_audio_chunks(samples, rate)]


def _separate(address: str, requests: Iterator[separator_pb2.SeparateRequest], timeout: float = 30) -> list[Any]:
    with grpc.insecure_channel(address) as channel:
        return list(separator_pb2_grpc.SeparatorStub(channel).Separate(requests, timeout=timeout))


def _then_silence(messages: list[Any], stop: threading.Event, every: float = 0.0) -> Iterator[Any]:
    """``messages`` (one every ``every`` s), then nothing until ``stop``."""
    for message in messages:
        yield message
        if every:
            time.sleep(every)
    stop.wait(60)


def test_health_watch_is_refused_and_a_check_keeps_no_name(separator: RunningService) -> None:
    with grpc.insecure_channel(separator.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as watched:
            next(iter(stub.Watch(health_pb2.HealthCheckRequest(service="x" * (1 << 20)), timeout=10)))
        assert watched.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as checked:
            stub.Check(health_pb2.HealthCheckRequest(service="x" * (1 << 20)), timeout=10)
        assert checked.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 200 characters, got 1048576" in checked.value.details()
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert len(separator.health._status) == 2  # "" and the service: nothing a caller named was kept


def test_the_health_port_answers_check_alone_within_small_limits(separator: RunningService) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{separator.health_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as big:
            stub.Check(health_pb2.HealthCheckRequest(service="x" * 4096), timeout=10)
        assert big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # over the port's 1 KiB message limit
        with pytest.raises(grpc.RpcError) as other:
            separator_pb2_grpc.SeparatorStub(channel).Describe(separator_pb2.SeparateOptions(), timeout=10)
        assert other.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_a_call_that_takes_its_slot_and_sends_nothing_is_ended_and_the_next_runs(separator: RunningService) -> None:
    stop = threading.Event()
    errors: list[grpc.RpcError] = []

    def silent() -> None:  # its options (so it takes the slot: a pin is read before), then nothing
        try:
            options = separator_pb2.SeparateRequest(options=separator_pb2.SeparateOptions())
            _separate(separator.address, _then_silence([options], stop))
        except grpc.RpcError as exc:
            errors.append(exc)

    holder = threading.Thread(target=silent)
    started = time.monotonic()
    holder.start()
    try:
        time.sleep(0.3)
        responses = _separate(separator.address, iter(_audio(0.5)))  # waits in line behind the silent call
    finally:
        stop.set()
        holder.join(10)
    assert any(r.WhichOneof("item") == "header" for r in responses)
    assert time.monotonic() - started < 10
    assert errors and errors[0].code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "min_request_rate=65536 bytes/s averaged over request_window_seconds=1" in errors[0].details()


def test_a_trickle_of_bytes_does_not_keep_a_call_alive(separator: RunningService) -> None:
    # A few hundred bytes every 0.2 s: always something, never the rate.
    stop = threading.Event()
    tiny = [separator_pb2.SeparateRequest(audio=c) for c in iter_audio_chunks(np.zeros((1, 64), np.float32), 8000)]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _separate(separator.address, _then_silence(tiny * 100, stop, every=0.2))
    stop.set()
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "min_request_rate" in info.value.details()
    assert time.monotonic() - started < 5


def test_a_peer_that_reads_no_responses_is_cancelled_and_its_slot_released(separator: RunningService) -> None:
    # 20 s of stereo in, 4 stems of it out (28 MB): far past what the transport buffers for a peer not reading.
    with grpc.insecure_channel(separator.address) as channel:
        call = separator_pb2_grpc.SeparatorStub(channel).Separate(iter(_audio(19.9)), timeout=60)
        deadline = time.monotonic() + 20
        while separator.interceptor.sends is not None and separator.interceptor.sends.cancelled == 0:
            assert time.monotonic() < deadline, "the call was not cancelled"
            time.sleep(0.1)
        call.cancel()
    responses = _separate(separator.address, iter(_audio(0.5)))  # the slot is free again
    assert any(r.WhichOneof("item") == "header" for r in responses)


def test_an_idle_reflection_stream_is_ended_like_any_other_stream(separator: RunningService) -> None:
    stop = threading.Event()
    started = time.monotonic()
    with grpc.insecure_channel(separator.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(_then_silence([], stop), timeout=30))
    stop.set()
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10
    assert reflection_pb2.ServerReflectionRequest  # the real reflection service answered (and was paced)


def test_one_owner_holds_at_most_its_share_of_slots_and_of_the_line() -> None:
    gate = Gate(concurrency=2, max_queue=4, per_owner=1)
    gate.ready.set()
    with gate.admit(owner="a") as first:
        first.take()
        with gate.admit(owner="a") as second:  # a's second waits (its own place in line) ...
            assert not second.holding and gate._try_take(second) is False
            with gate.admit(owner="b") as other:  # ... while b, behind it, takes the free slot
                other.take()
                assert other.holding
            with pytest.raises(Exception, match="caller_share=1"), gate.admit(owner="a"):
                pass  # a third of a's: its share of the line is taken too
        assert gate.running_count == 1


def test_a_caller_holds_at_most_max_calls_per_caller_open_whatever_the_methods(
    tiny: Callable[[str], dict[str, Any]],
) -> None:
    """The limit counts every call of a caller (here a streaming ``Separate`` and a unary ``Describe``; at the front
    door ``CreateImage`` and ``CreateReel`` alike): a caller past it is refused before its call holds anything,
    health probes are never counted, and a held call's end gives its place back."""
    d = definition("separator")
    svc = start_service(d, d.config_class(port=0, max_calls_per_caller=2, request_window_seconds=3.0,
                                          **tiny("separator")), wait=True)
    stop = threading.Event()
    ended: list[grpc.StatusCode] = []

    def silent() -> None:
        try:
            _separate(svc.address, _then_silence([], stop))
        except grpc.RpcError as exc:
            ended.append(exc.code())

    holders = [threading.Thread(target=silent) for _ in range(2)]
    try:
        with grpc.insecure_channel(svc.address) as channel:
            describe = separator_pb2_grpc.SeparatorStub(channel).Describe
            for holder in holders:
                holder.start()
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as refused:
                describe(separator_pb2.SeparateOptions(), timeout=10)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 call(s) open (limit max_calls_per_caller=2)" in refused.value.details()
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
            for holder in holders:
                holder.join(15)
            assert ended == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2  # the request window ended both
            assert describe(separator_pb2.SeparateOptions(), timeout=10).model.service == "separator"  # places back
    finally:
        stop.set()
        svc.stop(0)
