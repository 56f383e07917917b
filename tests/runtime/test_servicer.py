"""The model servicers' shared base (runtime/servicer.py), through a real text encoder and separator: the pin
is judged before a place in line is taken, the Served header comes before the place in line, and nothing of a
foreign-pinned call is left behind."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from helpers import OTHER_PIN, refused_before_any_message

from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.identity import identity
from audiomemory.stack import definition
from audiomemory.v1 import common_pb2, separator_pb2, separator_pb2_grpc, text_encoder_pb2, text_encoder_pb2_grpc


def test_a_foreign_pin_is_refused_as_such_even_when_the_line_is_full(tiny_clip: dict[str, Any],
                                                                      start_services: Any) -> None:
    d = definition("text_encoder")
    svc = start_services(d, d.config_class(port=0, max_queue=0, **tiny_clip))
    with svc.gate.slot(), grpc.insecure_channel(svc.address) as channel:  # the one slot is taken, no line
        stub = text_encoder_pb2_grpc.TextEncoderStub(channel)
        model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
        # FAILED_PRECONDITION, not RESOURCE_EXHAUSTED: another replica may run the identity asked for.
        refused_before_any_message(stub.Encode(text_encoder_pb2.EncodeRequest(texts=["hi"], pin=OTHER_PIN),
                                               timeout=10), identity(model))
        with pytest.raises(grpc.RpcError) as busy:
            list(stub.Encode(text_encoder_pb2.EncodeRequest(texts=["hi"]), timeout=10))
        assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (svc.gate.running_count, svc.gate.waiting_count) == (0, 0)


def test_a_waiting_call_opens_with_served_then_its_place_in_line(tiny: Any, start_services: Any) -> None:
    d = definition("separator")
    svc = start_services(d, d.config_class(port=0, max_queue=2, **tiny("separator")))
    audio = np.zeros((2, 4410), np.float32)
    requests = [separator_pb2.SeparateRequest(audio=c) for c in iter_audio_chunks(audio, 44100)]
    with grpc.insecure_channel(svc.address) as channel:
        stub = separator_pb2_grpc.SeparatorStub(channel)
        with svc.gate.slot():  # someone else holds the slot
            call = stub.Separate(iter(requests), timeout=30)
            kinds = [next(call).WhichOneof("item") for _ in range(2)]
            assert kinds == ["served", "queued"]
            assert svc.gate.waiting_count == 1
        rest = [r.WhichOneof("item") for r in call]
    assert rest[0] == "header" and set(rest[1:]) == {"chunk"}
    assert (svc.gate.running_count, svc.gate.waiting_count) == (0, 0)
