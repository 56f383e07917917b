"""`make reliability`: every refused credential against a TLS + token stack.

The code and its description: ``audiomemory.bench.auth`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.auth import main

if __name__ == "__main__":
    main()
