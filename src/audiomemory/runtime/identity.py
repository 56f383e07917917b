"""What a replica runs, as one comparable value, and the pin a request may carry (docs/DESIGN.md §5).

``identity(model)`` is the digest of the parts of a ``ModelInfo`` that change a model's output — backend,
model id, revision (the weights' hash), compute dtype and the backend's output-shaping ``extra`` — not
where it runs (device) or the serving package's version. A model service sends it in its call header
(``Served``); a caller that needs a particular replica names it in the request's ``Pin``; ``check_pin``
refuses the call with FAILED_PRECONDITION (``PinMismatch``) before anything is sent, so a channel's retry
policy moves it to another replica. The orchestrator's audio cache keys vectors by the same digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.v1 import common_pb2


class PinMismatch(FailedPrecondition):
    """The request pins an identity this replica does not run (retried on another replica)."""


def output_identity(model: common_pb2.ModelInfo) -> dict[str, object]:
    """The parts of ``model`` that change a model's output."""
    return {"backend": model.backend, "model_id": model.model_id, "revision": model.revision,
            "dtype": model.dtype, "extra": dict(sorted(model.extra.items()))}


def identity(model: common_pb2.ModelInfo) -> str:
    """A short digest of ``output_identity(model)``: equal exactly when two replicas paint alike."""
    canonical = json.dumps(output_identity(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def describe_model(model: common_pb2.ModelInfo) -> str:
    """``backend/model_id@revision (dtype)`` — how a message names an identity."""
    revision = model.revision[:12] if model.revision else "?"
    return f"{model.backend}/{model.model_id}@{revision} ({model.dtype or '?'})"


def served(model: common_pb2.ModelInfo, resolved: Mapping[str, object] | None = None) -> common_pb2.Served:
    """The call header a replica running ``model`` sends first."""
    return common_pb2.Served(model=model, identity=identity(model),
                             resolved={k: _text(v) for k, v in (resolved or {}).items()})


def pin_for(header: common_pb2.Served) -> common_pb2.Pin:
    """The pin that asks for the replica that sent ``header`` again."""
    return common_pb2.Pin(identity=header.identity, describe=describe_model(header.model))


def check_pin(pin: common_pb2.Pin, model: common_pb2.ModelInfo, kind: str) -> None:
    """Refuse (``PinMismatch``) a call pinned to an identity other than ``model``'s; an empty pin is any."""
    if pin.identity and pin.identity != identity(model):
        wanted = pin.describe[:200] or pin.identity[:32]
        raise PinMismatch(f"{kind}: the request pins {wanted} (identity {pin.identity[:32]}); this replica runs "
                          f"{describe_model(model)} (identity {identity(model)})")


def _text(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)
