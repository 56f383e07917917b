"""Model profiles: which weights each service loads.

- ``default``: the real pretrained models (each service config's defaults), fetched into the
  standard caches (``HF_HOME``, ``TORCH_HOME``) on first use or ahead of time by ``models pull``.
- ``tiny``: small random-weight models of the same classes, written once under
  ``$AUDIOMEMORY_HOME/tiny`` (default ``~/.cache/audiomemory/tiny``) by each backend's
  ``write_tiny`` and loaded through the same loading code. Images from it mean nothing.
- a YAML file: ``{separator: {model: ..., repo: ...}, generator: {model: ...}, ...}`` — per-service
  config overrides, for your own weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from audiomemory.stack import KINDS, MODEL_KINDS, definition

Overrides = dict[str, dict[str, Any]]
_TINY_INDEX = "profile.yaml"


def home() -> Path:
    return Path(os.environ.get("AUDIOMEMORY_HOME", Path.home() / ".cache" / "audiomemory"))


def tiny_root() -> Path:
    return home() / "tiny"


def tiny_present(root: Path | None = None) -> bool:
    """Whether ``make_tiny`` has finished writing the tiny models under ``root`` (default ``tiny_root()``)."""
    return ((root or tiny_root()) / _TINY_INDEX).exists()


def make_tiny(root: Path | None = None, *, force: bool = False) -> Overrides:
    """Write (or reuse) the tiny random-weight models; return per-service config overrides."""
    root = root or tiny_root()
    index = root / _TINY_INDEX
    overrides: Overrides = _read(index) if tiny_present(root) and not force else {}
    if all(kind in overrides for kind in MODEL_KINDS):
        return overrides
    # A profile written before a service existed gets that service's model added (the others are kept).
    root.mkdir(parents=True, exist_ok=True)
    overrides.update({kind: write_tiny_for(kind, root / kind) for kind in MODEL_KINDS if kind not in overrides})
    tmp = index.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(overrides, sort_keys=True))
    tmp.replace(index)  # the index appears only once every model is complete
    return overrides


def write_tiny_for(kind: str, root: Path) -> dict[str, Any]:
    """Write one service's tiny model (its default backend's) under ``root``; return its overrides."""
    d = definition(kind)
    config = d.config_class()
    return {"backend": config.backend, **d.make_backend_class(d.backend_name(config)).write_tiny(root)}


def _read(path: Path) -> Overrides:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of service name to settings")
    unknown = set(data) - set(KINDS)
    if unknown:
        raise ValueError(f"{path}: unknown services {sorted(unknown)}; known: {', '.join(KINDS)}")
    return data


def resolve(name: str) -> Overrides:
    """Overrides for ``default``, ``tiny`` or a YAML profile file."""
    if name == "default":
        return {}
    if name == "tiny":
        return make_tiny()
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return _read(path)
    raise ValueError(f"--models: expected default, tiny or an existing PROFILE.yaml, got {name!r}")
