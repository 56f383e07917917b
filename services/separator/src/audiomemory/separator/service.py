"""``DEFINITION``: how the shared runtime hosts the separator (``serve separator``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audiomemory.runtime.service import ServiceDefinition, serve_forever
from audiomemory.separator.config import SeparatorConfig
from audiomemory.separator.servicer import add_servicer

DEFINITION = ServiceDefinition(
    kind="separator",
    grpc_service_name="audiomemory.v1.Separator",
    config_class=SeparatorConfig,
    add_servicer=add_servicer,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the separator until SIGTERM (flags as in ``SeparatorConfig``)."""
    serve_forever(DEFINITION, SeparatorConfig.from_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
