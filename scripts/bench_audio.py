"""`make bench-audio`: the separator and audio encoder, in-process against their services.

The code and its description: ``audiomemory.bench.audio`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.audio import main

if __name__ == "__main__":
    main()
