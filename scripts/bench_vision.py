"""`make bench-vision`: the text encoder and generator, in-process against their services.

The code and its description: ``audiomemory.bench.vision`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.vision import main

if __name__ == "__main__":
    main()
