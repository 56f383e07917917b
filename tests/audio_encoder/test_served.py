"""Every Embed call opens with the replica's Served header (what ran, the hop this call used), and a call
pinned to another identity is refused before anything is sent."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import torch
from helpers import OTHER_PIN, refused_before_any_message, served

from audiomemory.audio_encoder.backends.int8 import resolve_precision
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.identity import identity, pin_for
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2

from .conftest import HOP
from .streams import collect, interleaved, tone


def _options(**fields: object) -> audio_encoder_pb2.EmbedOptions:
    return audio_encoder_pb2.EmbedOptions(**fields)  # type: ignore[arg-type]


def test_the_first_message_is_served_with_the_replicas_identity_and_the_hop_used(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub,
) -> None:
    info = stub.Describe(common_pb2.DescribeRequest(), timeout=10)
    answer = collect(stub.Embed(interleaved([(tone(48000, 1, 1.0), 48000)], [48000], _options()), timeout=60))
    assert answer.kinds[0] == "served" and answer.served is not None and answer.end is not None
    assert answer.served.model == info.model and answer.served.identity == identity(info.model)
    # The precision policy's answer for this machine is what the header (and Describe) report.
    assert answer.served.model.dtype == resolve_precision("auto", torch.device("cpu"))
    assert dict(answer.served.resolved) == {"hop_seconds": repr(HOP), "window_seconds": "1.0",
                                            "embedding_dim": str(info.embedding_dim)}


def test_the_header_states_the_hop_grown_for_a_long_announced_signal(
    start_encoder: Callable[..., RunningService], tiny_encoder: dict[str, object],
) -> None:
    svc = start_encoder(AudioEncoderConfig(port=0, hop_seconds=0.1, **tiny_encoder))  # type: ignore[arg-type]
    with grpc.insecure_channel(svc.address) as channel:
        stub = audio_encoder_pb2_grpc.AudioEncoderStub(channel)
        short = stub.Embed(iter([audio_encoder_pb2.EmbedRequest(options=_options(input_frames=48000 * 10))]),
                           timeout=60)
        assert served(short).resolved["hop_seconds"] == "0.1"
        short.cancel()
        # 120 s announced: 0.1 × √(120 / 30) = 0.2 s (DESIGN §9).
        long = stub.Embed(iter([audio_encoder_pb2.EmbedRequest(options=_options(input_frames=48000 * 120))]),
                          timeout=60)
        assert served(long).resolved["hop_seconds"] == "0.2"
        long.cancel()


def test_a_call_pinned_to_another_identity_is_refused_before_any_message(
    stub: audio_encoder_pb2_grpc.AudioEncoderStub,
) -> None:
    model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
    call = stub.Embed(interleaved([(tone(48000, 1, 1.0), 48000)], [48000], _options(pin=OTHER_PIN)), timeout=60)
    refused_before_any_message(call, identity(model))


def test_a_call_pinned_to_the_replicas_own_identity_is_served(stub: audio_encoder_pb2_grpc.AudioEncoderStub) -> None:
    model = stub.Describe(common_pb2.DescribeRequest(), timeout=10).model
    header = common_pb2.Served(model=model, identity=identity(model))
    answer = collect(stub.Embed(interleaved([(tone(48000, 1, 1.0), 48000)], [48000], _options(pin=pin_for(header))),
                                timeout=60))
    assert answer.served is not None and answer.served.identity == identity(model)
    assert answer.end is not None and list(answer.end.frames) == [2]
