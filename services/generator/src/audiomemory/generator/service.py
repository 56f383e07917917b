"""``DEFINITION``: how the shared runtime hosts the generator (``serve generator``)."""

from __future__ import annotations

import sys

from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    kind="generator",
    grpc_service_name="audiomemory.v1.Generator",
    config_class=GeneratorConfig,
    add_servicer=add_servicer,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve generator [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
