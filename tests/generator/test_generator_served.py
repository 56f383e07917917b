"""Every Generate call opens with the replica's Served header (who paints, the steps, guidance, scheduler and
size it resolved), and a call pinned to another identity is refused before anything is sent."""

from __future__ import annotations

from typing import Any

import numpy as np
from helpers import OTHER_PIN, refused_before_any_message

from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.identity import identity, pin_for
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

GenStub = generator_pb2_grpc.GeneratorStub


def _request(stub: GenStub, **fields: Any) -> generator_pb2.GenerateRequest:
    dim = stub.Describe(common_pb2.DescribeRequest(), timeout=10).cross_attention_dim
    rng = np.random.default_rng(0)
    embeds = [to_tensor(rng.standard_normal((1, 8, dim)).astype(np.float32)) for _ in range(2)]
    return generator_pb2.GenerateRequest(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], seed=1,
                                         **{"steps": 2, "width": 64, "height": 64, **fields})


def _kinds_and_header(stub: GenStub, request: generator_pb2.GenerateRequest) -> tuple[list[str], Any, Any]:
    responses = list(stub.Generate(request, timeout=60))
    return [r.WhichOneof("item") for r in responses], responses[0].served, responses[-1].image


def test_the_first_message_is_served_with_the_replicas_identity_and_what_it_resolved(generator: GenStub) -> None:
    info = generator.Describe(common_pb2.DescribeRequest(), timeout=10)
    kinds, header, image = _kinds_and_header(generator, _request(generator, steps=3, width=0, height=64))
    assert kinds[0] == "served" and "served" not in kinds[1:] and kinds[-1] == "image"
    assert header.model == info.model and header.identity == identity(info.model)
    assert header.model.dtype == "float32"  # the precision the fixture pinned, as the policy reports it
    resolved = dict(header.resolved)
    assert float(resolved.pop("guidance")) == np.float32(info.default_guidance)  # unset: the default filled in
    assert resolved == {"steps": "3", "scheduler": image.scheduler, "width": str(info.default_size),
                        "height": "64"}
    _, explicit, _ = _kinds_and_header(generator, _request(generator, guidance=2.5, scheduler="ddim"))
    assert (explicit.resolved["guidance"], explicit.resolved["scheduler"]) == ("2.5", "ddim")


def test_a_call_pinned_to_another_identity_is_refused_before_any_message(generator: GenStub) -> None:
    model = generator.Describe(common_pb2.DescribeRequest(), timeout=10).model
    refused_before_any_message(generator.Generate(_request(generator, pin=OTHER_PIN), timeout=60), identity(model))


def test_a_call_pinned_to_the_replicas_own_identity_is_served(generator: GenStub) -> None:
    _, header, _ = _kinds_and_header(generator, _request(generator))
    kinds, again, image = _kinds_and_header(generator, _request(generator, pin=pin_for(header)))
    assert again.identity == header.identity and kinds[-1] == "image" and image.last
