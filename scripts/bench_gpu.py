"""`make bench-gpu`: the whole pipeline on a CUDA device (float16, SDPA, channels_last, torch.compile), with the
VAE's NaN guard, batched painting and the devices checked; one JSON line.

The code and its description: ``audiomemory.bench.gpu`` (``--help`` for the options; the test suite runs it with
``--device cpu --tiny``, tests/scripts/).
"""

from audiomemory.bench.gpu import main

if __name__ == "__main__":
    main()
