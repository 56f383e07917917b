"""The backend plugin contract.

A backend is a small class: ``load()`` (heavy: reads weights, may take minutes), ``describe()``
(identity of what was loaded) and its service's one verb (``separate``, ``embed``, ``encode``,
``generate``), declared by each service's abstract base. Backends take and return numpy/torch
and plain dataclasses; protobuf stays in the servicer. Backends register under the entry-point
group ``audiomemory.<kind>``; see ``registry.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from audiomemory.v1 import common_pb2

if TYPE_CHECKING:
    import torch

    from audiomemory.runtime.config import ServiceConfig


#: A zero-argument callable that says whether the caller gave up; backends poll it between model calls.
CancelCheck = Callable[[], bool]


@cache
def package_version(package: str) -> str:
    """The installed version of the distribution ``package`` ("unknown" if it is not installed)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def public_model_id(model: str) -> str:
    """``model`` as it may leave this machine: a local folder or file (an absolute path, one under ``~``,
    or one that exists here) by its last name only, never the server's path (the revision, a content
    hash, still tells two such models apart); a hub id or a built-in name as it is."""
    path = Path(model).expanduser()
    if model.startswith(("/", "~", ".")) or path.exists():
        return path.name or model
    return model


@dataclass
class ModelInfo:
    """Identity of a loaded model: enough, with the weights, to reproduce its output. ``model_id`` leaves
    the process (``Describe``, an image's record) through ``public_model_id``: a name, never a path."""

    backend: str
    model_id: str
    revision: str
    device: str
    dtype: str
    extra: dict[str, str] = field(default_factory=dict)

    def to_proto(self, service: str, package: str = "audiomemory") -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(
            service=service,
            backend=self.backend,
            model_id=public_model_id(self.model_id),
            revision=self.revision,
            device=self.device,
            dtype=self.dtype,
            version=package_version(package),
            extra=self.extra,
        )


class Loadable(ABC):
    """What a service must have loaded before it reports SERVING: a model ``Backend``, or — for the
    orchestrator, which has no model — its connections to the model services (``Downstream``)."""

    #: Load under the process-wide model-loading lock (see ``service._LOAD_LOCK``): True for whatever
    #: builds torch modules; the orchestrator's connections wait on other services and build none.
    exclusive_load: ClassVar[bool] = True

    @abstractmethod
    def load(self) -> None:
        """Get ready (read weights, connect); raise a project error when that cannot be done."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most hold nothing but memory
        """Release what is held besides memory (channels, files); called when the service stops."""


class Backend(Loadable):
    """Base of every model backend. Subclasses set ``name`` and implement their service's verb."""

    name: ClassVar[str] = ""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config

    @abstractmethod
    def load(self) -> None:
        """Load weights onto the device. Raise ``ModelUnavailable`` when they cannot be had."""

    @abstractmethod
    def describe(self) -> ModelInfo:
        """Identity of the loaded model (called after ``load``)."""

    @classmethod
    def write_tiny(cls, root: Path) -> dict[str, Any]:
        """Write small random-weight models under ``root``; return the config overrides selecting them."""
        raise NotImplementedError(f"backend {cls.name!r} has no tiny profile")

    @classmethod
    def pull(cls, config: ServiceConfig) -> None:
        """Fetch the configured weights into the standard caches ahead of time."""
        raise NotImplementedError(f"backend {cls.name!r} cannot pull weights")


def resolve_device(spec: str) -> torch.device:
    """``auto`` → the first CUDA device if present, else CPU; anything else as torch parses it."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def offline() -> bool:
    """True when the Hugging Face / hub libraries are told not to touch the network."""
    flags = ("HF_HUB_OFFLINE", "AUDIOMEMORY_OFFLINE")
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in flags)


def reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether ``host:443`` accepts a TCP connection within ``timeout`` — DNS included, hence the thread:
    a resolver with no network can block far longer than any socket timeout."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name=f"reachable-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


#: How to get weights that cannot be downloaded now (the loaders' errors end with it).
HOW_TO_GET = (
    "fetch it ahead of time with `audiomemory models pull` (needs network once), "
    "or run with `--models tiny` for small random-weight test models"
)


def hf_endpoint() -> str:
    """The Hugging Face hub this process would download from (``HF_ENDPOINT`` or huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def download_blocked(url: str, timeout: float = 2.0) -> str | None:
    """Why nothing can be downloaded from ``url``'s host now, as a phrase for an error; None if it can."""
    if offline():
        return "offline mode is set (HF_HUB_OFFLINE or AUDIOMEMORY_OFFLINE)"
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return None if reachable(host, timeout) else "the network is unreachable"
