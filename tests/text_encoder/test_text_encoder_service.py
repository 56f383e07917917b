"""The TextEncoder service over real gRPC with the tiny CLIP: results, limits, odd input."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from audiomemory.runtime.codec import assemble_tensor, from_tensor
from audiomemory.runtime.service import RunningService
from audiomemory.text_encoder.backends.clip import ClipBackend
from audiomemory.v1 import common_pb2, text_encoder_pb2, text_encoder_pb2_grpc

Stub = text_encoder_pb2_grpc.TextEncoderStub


def encode(stub: Stub, texts: list[str]) -> tuple[text_encoder_pb2.EncodeHeader, np.ndarray]:
    responses = list(stub.Encode(text_encoder_pb2.EncodeRequest(texts=texts), timeout=30))
    assert [r.WhichOneof("item") for r in responses[:2]] == ["served", "header"]
    assert all(r.WhichOneof("item") == "embeddings" for r in responses[2:])
    embeddings = assemble_tensor((r.embeddings for r in responses[2:]), "embeddings", max_bytes=1 << 26)
    return responses[1].header, embeddings


def assert_still_serving(stub: Stub) -> None:
    _header, embeddings = encode(stub, ["still here"])
    assert embeddings.shape == (1, 77, 32)


def test_describe_gives_the_io_facts(text_encoder: Stub, tiny_clip: dict[str, str]) -> None:
    info = text_encoder.Describe(common_pb2.DescribeRequest(), timeout=10)
    assert (info.hidden_size, info.max_length, info.vocab_size) == (32, 77, 49408)
    assert (info.max_texts, info.max_chars) == (4, 500)
    assert info.model.service == "text_encoder" and info.model.backend == "clip"
    assert info.model.model_id == tiny_clip["model"].rsplit("/", 1)[-1]  # the folder's name, never its path
    assert info.model.revision.startswith("sha256:") and info.model.dtype == "float32"
    assert info.model.device == "cpu"


def test_encode_streams_header_then_the_backends_embeddings(
    text_encoder: Stub, clip_backend: ClipBackend
) -> None:
    texts = ["a photo of a cat", "", "la " * 100]
    header, embeddings = encode(text_encoder, texts)
    token_ids = from_tensor(header.token_ids, field="token_ids", shape=(3, 77), dtypes=("int64",))
    assert token_ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert list(header.truncated) == [False, False, True]
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 77, 32)
    expected = clip_backend.encode(texts)
    np.testing.assert_array_equal(token_ids, expected.token_ids)
    np.testing.assert_allclose(embeddings, expected.embeddings, rtol=0, atol=1e-6)


def test_unicode_emoji_rtl_and_controls_over_the_wire(text_encoder: Stub) -> None:
    _header, embeddings = encode(text_encoder, ["🎵 שלום مرحبا", "\x00\x1b[0m\u202e", "漢字", "ok"])
    assert embeddings.shape == (4, 77, 32) and np.isfinite(embeddings).all()


def test_too_many_texts_is_resource_exhausted_naming_the_limit(text_encoder: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        encode(text_encoder, ["x"] * 5)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_texts=4" in caught.value.details() and "5 texts" in caught.value.details()
    assert_still_serving(text_encoder)


def test_too_long_text_is_invalid_argument_naming_the_limit(text_encoder: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        encode(text_encoder, ["fine", "y" * 501])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert "texts[1]" in details and "501 characters" in details and "max_chars=500" in details
    assert "yyyy" not in details  # the payload is never echoed
    assert_still_serving(text_encoder)


def test_no_texts_is_invalid_argument(text_encoder: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        encode(text_encoder, [])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one text" in caught.value.details()
    assert_still_serving(text_encoder)


def test_text_at_the_limit_is_accepted(text_encoder: Stub) -> None:
    header, _ = encode(text_encoder, ["z" * 500])
    assert list(header.truncated) == [True]


def test_health_reports_serving_once_loaded(text_encoder_service: RunningService) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(text_encoder_service.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="audiomemory.v1.TextEncoder"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
