"""``DEFINITION``: how the shared runtime hosts the text encoder (``serve text_encoder``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audiomemory.runtime.service import ServiceDefinition, serve_forever
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.text_encoder.servicer import add_servicer

DEFINITION = ServiceDefinition(
    kind="text_encoder",
    grpc_service_name="audiomemory.v1.TextEncoder",
    config_class=TextEncoderConfig,
    add_servicer=add_servicer,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the text encoder until SIGTERM (flags as in ``TextEncoderConfig``)."""
    serve_forever(DEFINITION, TextEncoderConfig.from_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
