"""``DEFINITION``: how the shared runtime hosts the audio encoder (``serve audio_encoder``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition, serve_forever

DEFINITION = ServiceDefinition(
    kind="audio_encoder",
    grpc_service_name="audiomemory.v1.AudioEncoder",
    config_class=AudioEncoderConfig,
    add_servicer=add_servicer,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the audio encoder until SIGTERM (flags as in ``AudioEncoderConfig``)."""
    serve_forever(DEFINITION, AudioEncoderConfig.from_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
