"""The generator service: prompt embeddings in, an image out.

Stable Diffusion (1.5 by default) loaded WITHOUT its own text encoder: the prompt and negative
prompt arrive as embeddings ``[1, 77, D]`` from the text encoder service (after the
orchestrator's fusion). The service streams one progress event per denoising step, then the PNG;
cancelling the call stops the denoising loop within one step.

Modules: ``config`` (``GeneratorConfig``), ``backends`` (the ``GeneratorBackend`` contract and
the ``stable-diffusion`` backend), ``servicer`` (the gRPC ``Generator`` service), ``service``
(``DEFINITION``).
"""
