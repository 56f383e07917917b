"""The orchestrator as a hosted service: ``DEFINITION`` for the shared runtime, and ``main``.

There is no model backend: the runtime's load step is ``Downstream.load`` (connect to the four
services, wait until they answer ``Describe`` and check they fit together), so health reports
SERVING only when the whole pipeline can run.

    python -m audiomemory.orchestrator.service --port 0 --generator-target dns:///generator:50051
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.downstream import Downstream
from audiomemory.orchestrator.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition, serve_forever

DEFINITION = ServiceDefinition(
    kind="orchestrator",
    grpc_service_name="audiomemory.v1.Orchestrator",
    config_class=OrchestratorConfig,
    add_servicer=add_servicer,
    create_backend=Downstream,
)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = OrchestratorConfig.from_args(list(sys.argv[1:] if argv is None else argv))
    serve_forever(DEFINITION, config)


if __name__ == "__main__":
    main()
