"""The model gate: first come first served, places in line for streaming calls, bounded, leak-free."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from audiomemory.runtime.errors import Cancelled, ResourceExhausted
from audiomemory.runtime.gate import Gate


class Caller:
    """A stand-in for a gRPC context: only whether the caller is still there matters to the gate."""

    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


def ready_gate(concurrency: int = 1, max_queue: int = 2) -> Gate:
    gate = Gate(concurrency, max_queue)
    gate.ready.set()
    return gate


def test_waiting_calls_run_in_arrival_order_and_report_their_place() -> None:
    gate = ready_gate(max_queue=3)
    order: list[str] = []
    places: dict[str, list[int]] = {}
    started = {name: threading.Event() for name in "abc"}

    def call(name: str) -> None:
        with gate.admit() as turn:
            started[name].set()
            places[name] = list(turn.waiting(every=0.01))
            order.append(name)

    with gate.slot():  # the running call
        threads = []
        for name in "abc":
            threads.append(threading.Thread(target=call, args=(name,)))
            threads[-1].start()
            started[name].wait(5)
        while gate.waiting_count < 3:
            pass
        assert [gate._position(t) for t in gate._waiting] == [1, 2, 3]
    for t in threads:
        t.join(5)
    assert order == ["a", "b", "c"]
    assert places["a"][0] == 1 and places["b"][0] == 2 and places["c"][0] == 3
    assert all(p == sorted(p, reverse=True) for p in places.values())  # a place only ever improves
    assert (gate.running_count, gate.waiting_count) == (0, 0)


def test_a_full_queue_is_refused_saying_how_busy() -> None:
    gate = ready_gate(max_queue=1)
    busy = "1 model call\\(s\\) running and 1 waiting"
    with gate.slot(), gate.admit(), pytest.raises(ResourceExhausted, match=busy), gate.admit():
        pass
    with gate.slot():  # everything was given back
        pass


def test_a_caller_that_leaves_while_waiting_is_dropped_from_the_line() -> None:
    gate = ready_gate()
    caller: Any = Caller()
    with gate.slot():
        with gate.admit(caller) as turn:
            waiting = turn.waiting(every=0.01)
            assert next(waiting) == 1
            caller.active = False
            with pytest.raises(Cancelled, match="went away while waiting"):
                next(waiting)
        assert gate.waiting_count == 0
    assert (gate.running_count, gate.waiting_count) == (0, 0)


def test_a_refused_call_carries_a_retry_hint_the_clients_retry_policy_honours(
    tiny_clip: dict[str, Any], start_services: Any
) -> None:
    import grpc

    from audiomemory.stack import definition
    from audiomemory.v1 import text_encoder_pb2, text_encoder_pb2_grpc

    d = definition("text_encoder")
    svc = start_services(d, d.config_class(port=0, max_queue=0, **tiny_clip))
    with svc.gate.slot(), grpc.insecure_channel(svc.address) as channel:
        stub = text_encoder_pb2_grpc.TextEncoderStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Encode(text_encoder_pb2.EncodeRequest(texts=["hi"]), timeout=10))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in about 5 s" in info.value.details()
    assert ("grpc-retry-pushback-ms", "5000") in tuple(info.value.trailing_metadata())


def test_a_capacity_is_shared_by_weight_in_arrival_order_and_resize_gives_room_back() -> None:
    gate = Gate(concurrency=4, max_queue=4, capacity=100)
    gate.ready.set()
    with gate.admit(weight=60) as first:
        first.take()
        with gate.admit(weight=50) as heavy, gate.admit(weight=10) as light:
            assert not gate._try_take(heavy)  # 60 + 50 > 100
            assert not gate._try_take(light)  # it would fit, but the heavier call came first
            first.resize(80)  # only ever lowered
            assert first.weight == 60
            first.resize(40)
            assert gate.used == 40
            heavy.take()
            light.take()
            assert gate.used == 100 and gate.running_count == 3
    assert (gate.used, gate.running_count, gate.waiting_count) == (0, 0, 0)


def test_a_weight_over_the_capacity_runs_alone() -> None:
    gate = Gate(concurrency=4, max_queue=4, capacity=100)
    gate.ready.set()
    with gate.admit(weight=10**9) as huge:
        huge.take()
        assert huge.weight == 100
        with gate.admit(weight=1) as small:
            assert not gate._try_take(small)
    with gate.admit(weight=1) as small:
        small.take()
