"""`make reliability`: memory of ``audiomemory up`` under callers of a long song.

The code and its description: ``audiomemory.bench.memory`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.memory import main

if __name__ == "__main__":
    main()
