"""`make bench-generators`: the generator's backends (diffusers eager, OpenVINO) on full-size SD 1.5 — seconds a
step, the image's PSNR against eager float32, and OpenVINO's first and warm start.

The code and its description: ``audiomemory.bench.generators`` (``--help``; the test suite runs ``--tiny``).
"""

from audiomemory.bench.generators import main

if __name__ == "__main__":
    main()
