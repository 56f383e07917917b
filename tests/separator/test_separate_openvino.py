"""The separator's separation over gRPC tests (test_separate.py), run again on the openvino backend.

The same test functions, collected here a second time; this module's ``SEPARATOR_BACKEND`` makes the module
fixture ``separator`` (conftest.py) serve them from ``--backend openvino`` on the tiny profile.
"""

from .test_separate import *  # noqa: F403 - the same tests, collected again in this module

SEPARATOR_BACKEND = "openvino"
