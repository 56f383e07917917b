"""`make bench-reel`: the memory reel's cost over the single image, and its sections painted batched vs one by one.

The code and its description: ``audiomemory.bench.reel`` (``--help`` for the options; ``--tiny`` is the smoke
version the test suite runs).
"""

from audiomemory.bench.reel import main

if __name__ == "__main__":
    main()
