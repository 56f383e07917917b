"""`make bench-work`: the arithmetic a whole-song job asks for (FLOP-counted, full-size architectures) at the new and
the reference settings, and this CPU's fastest float32 rates: the job's floor; one JSON line.

The code and its description: ``audiomemory.bench.work`` (``--help`` for the options; the test suite runs it with
``--tiny``, tests/scripts/).
"""

from audiomemory.bench.work import main

if __name__ == "__main__":
    main()
