"""The text encoder service: texts in, token-level embeddings out.

A CLIP text model (by default the one that ships with Stable Diffusion 1.5, ViT-L/14, 768-d)
tokenizes each text to exactly 77 tokens and returns the last hidden state ``[B, 77, D]`` in one
batched forward pass. The generator consumes these as ``prompt_embeds``.

Modules: ``config`` (``TextEncoderConfig``), ``backends`` (the ``TextEncoderBackend`` contract and
the ``clip`` backend), ``servicer`` (the gRPC ``TextEncoder`` service), ``service`` (``DEFINITION``).
"""
