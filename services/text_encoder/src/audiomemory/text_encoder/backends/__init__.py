"""The text encoder backend contract: texts in, token-level embeddings out.

A backend tokenizes every text to exactly ``max_length`` tokens (BOS, EOS and padding as the
model's tokenizer does), runs ONE batched forward pass and returns the last hidden state. It knows
nothing of protobuf; the servicer converts at the edge.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from audiomemory.runtime.backend import Backend


@dataclass(frozen=True)
class Encoded:
    """Result of one batched encode.

    ``embeddings``: float ``[B, L, D]`` (the last hidden state, float32 on the host).
    ``token_ids``: int64 ``[B, L]``, padded as the tokenizer pads.
    ``truncated``: per text, whether tokens were cut to fit ``L``.
    """

    embeddings: np.ndarray
    token_ids: np.ndarray
    truncated: list[bool]


class TextEncoderBackend(Backend):
    """Base of text encoder backends. After ``load()`` the properties below describe the model."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """D, the width of each token embedding."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """L, tokens per text (77 for CLIP)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size."""

    @abstractmethod
    def encode(self, texts: list[str]) -> Encoded:
        """Tokenize ``texts`` to ``max_length`` tokens each and return the last hidden state."""
