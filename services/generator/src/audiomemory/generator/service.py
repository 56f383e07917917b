"""``DEFINITION``: how the shared runtime hosts the generator (``serve generator``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition, serve_forever

DEFINITION = ServiceDefinition(
    kind="generator",
    grpc_service_name="audiomemory.v1.Generator",
    config_class=GeneratorConfig,
    add_servicer=add_servicer,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the generator until SIGTERM (flags as in ``GeneratorConfig``)."""
    serve_forever(DEFINITION, GeneratorConfig.from_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
