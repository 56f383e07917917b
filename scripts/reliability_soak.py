"""`make reliability`: many jobs through the services as deployed; memory must not creep.

The code and its description: ``audiomemory.bench.soak`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.soak import main

if __name__ == "__main__":
    main()
