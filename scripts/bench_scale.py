"""`make bench-scale`: generator-tier throughput with 2 replicas against 1.

The code and its description: ``audiomemory.bench.scale`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.scale import main

if __name__ == "__main__":
    main()
