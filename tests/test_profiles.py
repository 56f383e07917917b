"""The tiny profile: written once, reused, and completed when a newer release adds a service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from audiomemory import profiles
from audiomemory.stack import MODEL_KINDS


def test_a_profile_from_before_a_service_existed_gets_that_service_and_keeps_the_rest(
    tmp_path: Path, tiny: Callable[[str], dict[str, Any]]
) -> None:
    older = {kind: tiny(kind) for kind in MODEL_KINDS if kind != "transcriber"}
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(older))
    overrides = profiles.make_tiny(tmp_path)
    assert {k: overrides[k] for k in older} == older  # nothing rewritten
    assert overrides["transcriber"]["model"].startswith(str(tmp_path / "transcriber"))
    assert yaml.safe_load((tmp_path / "profile.yaml").read_text()) == overrides
    assert profiles.make_tiny(tmp_path) == overrides  # and now reused as it is
