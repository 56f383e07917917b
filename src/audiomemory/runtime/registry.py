"""Backends by name, from Python entry points.

Each service kind has its own group, ``audiomemory.<kind>`` (e.g. ``audiomemory.separator``). A
third party adds a backend by installing a package that declares one — no edit to this repo.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from audiomemory.runtime.backend import Backend
from audiomemory.runtime.errors import UnknownBackend

GROUP_PREFIX = "audiomemory."


def installed_backends(kind: str) -> list[str]:
    """Names of the backends installed for a service kind, sorted."""
    return sorted(ep.name for ep in entry_points(group=GROUP_PREFIX + kind))


def load_backend(kind: str, name: str) -> type[Backend]:
    """The backend class registered as ``name`` for ``kind``; unknown names list the installed ones."""
    for ep in entry_points(group=GROUP_PREFIX + kind):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Backend)):
                raise UnknownBackend(f"{kind} backend {name!r} ({ep.value}) is not a Backend subclass")
            return cls
    known = ", ".join(installed_backends(kind)) or "none"
    raise UnknownBackend(f"no {kind} backend named {name!r}; installed: {known}")
