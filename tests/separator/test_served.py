"""Every Separate call opens with the replica's Served header (what ran, the format it resolved), and a call
pinned to another identity is refused before anything is sent."""

from __future__ import annotations

import grpc
import pytest
import torch
from helpers import OTHER_PIN, refused_before_any_message

from audiomemory.runtime.identity import identity, pin_for
from audiomemory.separator.backends.numerics import resolve_precision
from audiomemory.v1 import common_pb2, separator_pb2, separator_pb2_grpc, tensor_pb2

from .streams import collect, output, requests, tone


def test_the_first_message_is_served_with_the_replicas_identity_and_the_format_delivered(
    stub: separator_pb2_grpc.SeparatorStub,
) -> None:
    model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
    asked = output(48000, 1, tensor_pb2.DTYPE_FLOAT16, stems=["vocals", "drums"])
    got = collect(stub.Separate(requests(tone(44100, 2, 0.3), 44100, output=asked), timeout=60))
    assert got.served is not None and got.served.model == model
    assert got.served.identity == identity(model)
    # The precision policy's answer for this machine is what the header (and Describe) report.
    assert got.served.model.dtype == resolve_precision("auto", torch.device("cpu"))
    assert dict(got.served.resolved) == {"stems": "vocals,drums", "sample_rate": "48000", "channels": "1",
                                         "dtype": "float16"}
    assert list(got.header.stems) == ["vocals", "drums"]  # the header agrees with what Served resolved
    plain = collect(stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60))
    assert plain.served is not None
    assert dict(plain.served.resolved) == {"stems": "drums,bass,other,vocals", "sample_rate": "44100",
                                           "channels": "2", "dtype": "float32"}


def test_a_call_pinned_to_another_identity_is_refused_before_any_message(
    stub: separator_pb2_grpc.SeparatorStub,
) -> None:
    model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
    pinned = separator_pb2.SeparateOptions(pin=OTHER_PIN)
    refused_before_any_message(stub.Separate(requests(tone(44100, 2, 0.3), 44100, output=pinned), timeout=60),
                               identity(model))


def test_a_call_pinned_to_the_replicas_own_identity_is_served(stub: separator_pb2_grpc.SeparatorStub) -> None:
    first = collect(stub.Separate(requests(tone(44100, 2, 0.3), 44100), timeout=60))
    assert first.served is not None
    pinned = separator_pb2.SeparateOptions(pin=pin_for(first.served))
    again = collect(stub.Separate(requests(tone(44100, 2, 0.3), 44100, output=pinned), timeout=60))
    assert again.served is not None and again.served.identity == first.served.identity
    assert again.header.frames == first.header.frames


def test_a_bad_first_request_is_refused_before_any_message(stub: separator_pb2_grpc.SeparatorStub) -> None:
    bad = separator_pb2.SeparateOptions(output=tensor_pb2.AudioFormat(channels=3))
    got = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in stub.Separate(requests(tone(44100, 2, 0.3), 44100, output=bad), timeout=30):
            got.append(response)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "options.output.channels" in str(
        caught.value.details())
    assert got == []  # checked from the options alone, before the header and before a slot
