"""``DEFINITION``: how the shared runtime hosts the separator (``serve separator``)."""

from __future__ import annotations

import sys

from audiomemory.runtime.service import ServiceDefinition
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.servicer import add_servicer

DEFINITION = ServiceDefinition(
    kind="separator",
    grpc_service_name="audiomemory.v1.Separator",
    config_class=SeparatorConfig,
    add_servicer=add_servicer,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve separator [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
