"""The service kinds of the system: the contract every part names them by (no part imports the launcher for it)."""

from __future__ import annotations

#: The model services a job calls, in pipeline order (the transcriber optional).
MODEL_KINDS: tuple[str, ...] = ("separator", "audio_encoder", "text_encoder", "generator", "transcriber")
#: Every service kind, the orchestrator last.
KINDS: tuple[str, ...] = (*MODEL_KINDS, "orchestrator")
#: How a message names each kind.
NAMES: dict[str, str] = {
    "separator": "separator",
    "audio_encoder": "audio encoder",
    "text_encoder": "text encoder",
    "generator": "generator",
    "transcriber": "transcriber",
    "orchestrator": "orchestrator",
}
