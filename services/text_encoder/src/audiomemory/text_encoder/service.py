"""``DEFINITION``: how the shared runtime hosts the text encoder (``serve text_encoder``)."""

from __future__ import annotations

import sys

from audiomemory.runtime.service import ServiceDefinition
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.text_encoder.servicer import add_servicer

DEFINITION = ServiceDefinition(
    kind="text_encoder",
    grpc_service_name="audiomemory.v1.TextEncoder",
    config_class=TextEncoderConfig,
    add_servicer=add_servicer,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve text_encoder [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
