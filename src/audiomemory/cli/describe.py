"""``audiomemory describe HOST:PORT ...``: which service answers there, with which model, as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import grpc
from google.protobuf.json_format import MessageToDict

from audiomemory.cli.common import PLAINTEXT, Connection, connection_options
from audiomemory.v1 import (
    audio_encoder_pb2_grpc,
    common_pb2,
    generator_pb2_grpc,
    orchestrator_pb2_grpc,
    separator_pb2_grpc,
    text_encoder_pb2_grpc,
    transcriber_pb2_grpc,
)

_STUBS: list[tuple[str, Callable[[grpc.Channel], Any]]] = [
    ("orchestrator", orchestrator_pb2_grpc.OrchestratorStub),
    ("separator", separator_pb2_grpc.SeparatorStub),
    ("audio_encoder", audio_encoder_pb2_grpc.AudioEncoderStub),
    ("text_encoder", text_encoder_pb2_grpc.TextEncoderStub),
    ("generator", generator_pb2_grpc.GeneratorStub),
    ("transcriber", transcriber_pb2_grpc.TranscriberStub),
]


def describe_address(address: str, timeout: float = 10.0, connection: Connection = PLAINTEXT
                     ) -> tuple[str, dict[str, Any]]:
    """(kind, Describe as a dict) of whichever Audio Memory service answers at ``address``."""
    with connection.client(address) as client:
        channel = client.channel
        for kind, stub in _STUBS:
            try:
                info = stub(channel).Describe(common_pb2.DescribeRequest(), timeout=timeout)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise click.ClickException(f"{address}: {err.code().name}: {err.details()}") from None
            return kind, MessageToDict(info, preserving_proto_field_name=True)
    raise click.ClickException(f"{address}: no Audio Memory service answers there")


@click.command()
@click.argument("addresses", nargs=-1, required=True)
@connection_options
def describe(addresses: tuple[str, ...], connection: Connection) -> None:
    """Print the Describe of the service(s) at HOST:PORT as JSON."""
    out = {}
    for address in addresses:
        kind, info = describe_address(address, connection=connection)
        out[address] = {"service": kind, **info}
    click.echo(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=2, sort_keys=True))
