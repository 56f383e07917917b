"""gRPC retries only re-send what they kept: a full-size Generate request must fit the retry buffer.

gRPC buffers each call's request so that it can re-send it on another replica,
but only up to `grpc.per_rpc_retry_buffer_size` (256 KiB by default); a bigger
call is committed to its first attempt and never retried. SD 1.5's
GenerateRequest carries two [1, 77, 768] float32 tensors, 473 KB: with the
default buffer, a replica that refuses it (UNAVAILABLE, or RESOURCE_EXHAUSTED
from a full queue) fails the job instead of moving it, which is what the
cluster's retry policy is for. The tiny models (32-d) never reach the limit, so
this is shown with full-size tensors against a server that refuses every
first attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest
from replicas import cluster_service_config

from audiomemory.runtime.codec import to_tensor
from audiomemory.v1 import generator_pb2, generator_pb2_grpc

SD15_TOKENS, SD15_DIM = 77, 768


class RefuseFirstAttempt(generator_pb2_grpc.GeneratorServicer):
    """Answers UNAVAILABLE to every odd-numbered call, like a replica that went away, then serves."""

    def __init__(self) -> None:
        self.attempts = 0

    def Describe(self, request: Any, context: grpc.ServicerContext) -> generator_pb2.GeneratorInfo:
        return generator_pb2.GeneratorInfo(cross_attention_dim=SD15_DIM, max_length=SD15_TOKENS)

    def Generate(self, request: Any, context: grpc.ServicerContext) -> Iterator[generator_pb2.GenerateResponse]:
        self.attempts += 1
        if self.attempts % 2 == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        yield generator_pb2.GenerateResponse(progress=generator_pb2.StepProgress(step=1, total=1))


@pytest.fixture
def refusing_replica() -> Iterator[tuple[str, RefuseFirstAttempt]]:
    servicer = RefuseFirstAttempt()
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_receive_message_length", 4 << 20)])
    generator_pb2_grpc.add_GeneratorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def full_size_request(dtype: type[np.floating[Any]]) -> generator_pb2.GenerateRequest:
    embeds = to_tensor(np.zeros((1, SD15_TOKENS, SD15_DIM), dtype))
    return generator_pb2.GenerateRequest(prompt_embeds=embeds, negative_prompt_embeds=embeds, seed=1, steps=1)


def generate(channel: grpc.Channel, request: generator_pb2.GenerateRequest) -> grpc.StatusCode:
    try:
        list(generator_pb2_grpc.GeneratorStub(channel).Generate(request, timeout=10))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_default_retry_buffer_gives_up_on_a_full_size_float32_request(
    refusing_replica: tuple[str, RefuseFirstAttempt],
) -> None:
    """The hazard itself, so the test below cannot pass for a reason that has nothing to do with it."""
    address, servicer = refusing_replica
    request = full_size_request(np.float32)
    assert request.ByteSize() > 256 * 1024
    options = [("grpc.service_config", cluster_service_config()), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(address, options=options) as channel:
        assert generate(channel, request) == grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts == 1


def test_orchestrator_channel_retries_a_refused_full_size_generate(
    refusing_replica: tuple[str, RefuseFirstAttempt],
) -> None:
    from audiomemory.orchestrator.config import OrchestratorConfig
    from audiomemory.orchestrator.downstream import Downstream

    address, servicer = refusing_replica
    downstream = Downstream(OrchestratorConfig(generator_target=address, service_config=cluster_service_config()))
    try:
        status = generate(downstream.channels["generator"], full_size_request(np.float32))
    finally:
        downstream.close()
    assert (status, servicer.attempts) == (grpc.StatusCode.OK, 2)
