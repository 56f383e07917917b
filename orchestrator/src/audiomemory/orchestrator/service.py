"""The orchestrator as a hosted service: ``DEFINITION`` for the shared runtime.

There is no model backend: what the runtime loads before serving is ``Downstream`` (a
``runtime.backend.Loadable``: connect to the four services, wait until they answer ``Describe`` and
check they fit together), so health reports SERVING only when the whole pipeline can run.

    audiomemory serve orchestrator --port 0 --generator-target dns:///generator:50051
"""

from __future__ import annotations

import sys

from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.downstream import Downstream
from audiomemory.orchestrator.servicer import add_servicer
from audiomemory.runtime.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    kind="orchestrator",
    grpc_service_name="audiomemory.v1.Orchestrator",
    config_class=OrchestratorConfig,
    add_servicer=add_servicer,
    create_backend=Downstream,
)


if __name__ == "__main__":  # python -m …: the same as `audiomemory serve orchestrator [flags]`
    from audiomemory.cli.main import cli

    cli(["serve", DEFINITION.kind, *sys.argv[1:]])
