"""`make bench-alloc`: glibc malloc against tcmalloc under SD 1.5 UNet calls.

The code and its description: ``audiomemory.bench.alloc`` (``--help`` for the options; the test suite runs its
smoke version, tests/scripts/).
"""

from audiomemory.bench.alloc import main

if __name__ == "__main__":
    main()
