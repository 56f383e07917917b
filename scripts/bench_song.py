"""`make bench-song`: a whole song through the services as deployed, new defaults against the reference.

The code and its description: ``audiomemory.bench.song`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.song import main

if __name__ == "__main__":
    main()
