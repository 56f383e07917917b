"""The generator service's own tests (test_generator_service.py), run again on the openvino backend.

The same test functions, collected here a second time; this module's ``GENERATOR_BACKEND`` makes the module
fixture ``generator_service`` (conftest.py) serve them from ``--backend openvino`` on the tiny profile.
"""

from test_generator_service import *  # noqa: F403 - the same tests, collected again in this module

GENERATOR_BACKEND = "openvino"
COMPILED_SIZES = "64x96"  # test_one_progress_event_per_step_then_the_png paints 64x96; every other test 64x64
