"""`make probe-concurrency`: the orchestrator's relay over gRPC, structured threads against grpc.aio (one JSON line).

The code is ``audiomemory.bench.concurrency``; docs/DESIGN.md §1 says what the figures decided.
"""

from __future__ import annotations

import argparse
import json

from audiomemory.bench.concurrency import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=256, help="relayed per job")
    parser.add_argument("--piece-kib", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2, help="relays at once")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.megabytes, args.piece_kib, args.jobs, args.repeats)))


if __name__ == "__main__":
    main()
