"""The orchestrator service: the product's front door.

A song file and its lyrics come in over ``CreateImage``; the orchestrator decodes the audio
(``decode``), asks the separator for four stems, embeds them concurrently with the audio encoder,
pools them (``fusion.pool_stems``), caches the pooled vector (``cache``), encodes the salient
lyrics window (``lyrics``) and the negative prompt with the text encoder in one call, fuses audio
into text (``fusion``, DESIGN.md §2) and has the generator paint the image, which it returns as a
PNG with reproducible metadata (``metadata``). It holds no model weights of its own.
"""
