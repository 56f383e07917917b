"""`make bench-e2e`: the whole job through the gRPC services against the same backends called in-process.

The code and its description: ``audiomemory.bench.e2e`` (``--help`` for the options; ``--tiny`` is the
smoke version the test suite runs).
"""

from audiomemory.bench.e2e import main

if __name__ == "__main__":
    main()
