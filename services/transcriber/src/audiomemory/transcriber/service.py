"""``DEFINITION``: how the shared runtime hosts the transcriber (``serve transcriber``)."""

from __future__ import annotations

import sys

from audiomemory.runtime.service import ServiceDefinition
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.servicer import add_servicer

DEFINITION = ServiceDefinition(
    kind="transcriber",
    grpc_service_name="audiomemory.v1.Transcriber",
    config_class=TranscriberConfig,
    add_servicer=add_servicer,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve transcriber [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
