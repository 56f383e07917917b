"""`make probe-concurrency`: the orchestrator's relay over gRPC, structured threads against grpc.aio (one JSON line).

The code and its description: ``audiomemory.bench.concurrency``; docs/DESIGN.md §1 says what the figures decided.
"""

from audiomemory.bench.concurrency import main

if __name__ == "__main__":
    main()
