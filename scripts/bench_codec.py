"""`make bench-codec`: the wire codec and streaming against memcpy and a raw socket.

The code and its description: ``audiomemory.bench.codec`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.codec import main

if __name__ == "__main__":
    main()
