"""Defaults more than one part of the system shows or falls back to, each defined once here.

The service that owns a setting publishes its configured value (e.g. the orchestrator's ``default_strength``
in its ``Describe``); clients show that, and fall back to these only before it has answered.
"""

from __future__ import annotations

#: Fusion strength α when a request sets none (the orchestrator's ``strength`` setting; docs/DESIGN.md §2).
DEFAULT_STRENGTH = 0.1

#: The Stable Diffusion repository the generator paints with and whose text encoder (CLIP ViT-L/14) the text
#: encoder runs: the two must match (their cross-attention width), so they are named once.
STABLE_DIFFUSION_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: The stems of the audio vector, in its order (the orchestrator's ``STEM_ORDER``), and the largest weight a
#: listener may give one (``CreateImageOptions.stem_weights``; docs/DESIGN.md §2 step 1b). Unnamed stems weigh 1.
STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
MAX_STEM_WEIGHT = 4.0
