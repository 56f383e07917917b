"""Every Encode call opens with the replica's Served header (who encodes, its token length and hidden size),
and a call pinned to another identity is refused before anything is sent."""

from __future__ import annotations

from helpers import OTHER_PIN, refused_before_any_message

from audiomemory.runtime.identity import identity, pin_for
from audiomemory.v1 import common_pb2, text_encoder_pb2, text_encoder_pb2_grpc

Stub = text_encoder_pb2_grpc.TextEncoderStub


def test_the_first_message_is_served_with_the_replicas_identity_and_its_shape(text_encoder: Stub) -> None:
    info = text_encoder.Describe(common_pb2.DescribeRequest(), timeout=10)
    responses = list(text_encoder.Encode(text_encoder_pb2.EncodeRequest(texts=["a"]), timeout=30))
    assert [r.WhichOneof("item") for r in responses[:2]] == ["served", "header"]
    header = responses[0].served
    assert header.model == info.model and header.identity == identity(info.model)
    assert dict(header.resolved) == {"max_length": str(info.max_length), "hidden_size": str(info.hidden_size)}


def test_a_call_pinned_to_another_identity_is_refused_before_any_message(text_encoder: Stub) -> None:
    model = text_encoder.Describe(common_pb2.DescribeRequest(), timeout=10).model
    call = text_encoder.Encode(text_encoder_pb2.EncodeRequest(texts=["a"], pin=OTHER_PIN), timeout=30)
    refused_before_any_message(call, identity(model))


def test_a_call_pinned_to_the_replicas_own_identity_is_served(text_encoder: Stub) -> None:
    first = next(iter(text_encoder.Encode(text_encoder_pb2.EncodeRequest(texts=["a"]), timeout=30))).served
    pinned = text_encoder_pb2.EncodeRequest(texts=["a", "b"], pin=pin_for(first))
    kinds = [r.WhichOneof("item") for r in text_encoder.Encode(pinned, timeout=30)]
    assert kinds[:2] == ["served", "header"] and kinds[-1] == "embeddings"
