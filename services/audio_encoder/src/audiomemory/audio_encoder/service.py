"""``DEFINITION``: how the shared runtime hosts the audio encoder (``serve audio_encoder``)."""

from __future__ import annotations

import sys

from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    kind="audio_encoder",
    grpc_service_name="audiomemory.v1.AudioEncoder",
    config_class=AudioEncoderConfig,
    add_servicer=add_servicer,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve audio_encoder [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
