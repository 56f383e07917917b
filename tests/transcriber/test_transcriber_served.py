"""Every Transcribe call opens with the replica's Served header (who listens, the language setting, the model's
rate), and a call pinned to another identity is refused before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from helpers import OTHER_PIN, refused_before_any_message

from audiomemory.runtime.identity import identity, pin_for
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import common_pb2, transcriber_pb2, transcriber_pb2_grpc

from .conftest import noise, requests


def _with(options: transcriber_pb2.TranscribeOptions, seconds: float = 1.0
          ) -> Iterator[transcriber_pb2.TranscribeRequest]:
    yield transcriber_pb2.TranscribeRequest(options=options)
    yield from list(requests(noise(16000, seconds), 16000))[1:]


def _call(service: RunningService, reqs: Iterator[transcriber_pb2.TranscribeRequest]) -> tuple[Any, list[Any]]:
    with grpc.insecure_channel(service.address) as channel:
        stub = transcriber_pb2_grpc.TranscriberStub(channel)
        return stub.Describe(common_pb2.DescribeRequest(), timeout=10), list(stub.Transcribe(reqs, timeout=120))


def test_the_first_message_is_served_with_the_replicas_identity_and_its_settings(
    guarded_service: RunningService,
) -> None:
    info, replies = _call(guarded_service, _with(transcriber_pb2.TranscribeOptions(language="de")))
    assert replies[0].WhichOneof("item") == "served" and replies[-1].WhichOneof("item") == "transcript"
    header = replies[0].served
    assert header.model == info.model and header.identity == identity(info.model)
    assert dict(header.resolved) == {"language": "de", "sample_rate": str(info.sample_rate)}
    _, plain = _call(guarded_service, _with(transcriber_pb2.TranscribeOptions()))
    assert dict(plain[0].served.resolved) == {"language": "", "sample_rate": "16000"}  # "": detected per window


def test_a_call_pinned_to_another_identity_is_refused_before_any_message(guarded_service: RunningService) -> None:
    with grpc.insecure_channel(guarded_service.address) as channel:
        stub = transcriber_pb2_grpc.TranscriberStub(channel)
        model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
        call = stub.Transcribe(_with(transcriber_pb2.TranscribeOptions(pin=OTHER_PIN)), timeout=60)
        refused_before_any_message(call, identity(model))


def test_a_call_pinned_to_the_replicas_own_identity_is_served(guarded_service: RunningService) -> None:
    _, first = _call(guarded_service, _with(transcriber_pb2.TranscribeOptions()))
    pinned = transcriber_pb2.TranscribeOptions(pin=pin_for(first[0].served))
    _, again = _call(guarded_service, _with(pinned))
    assert again[0].served.identity == first[0].served.identity and again[-1].HasField("transcript")
