"""The audio encoder service: signals (e.g. a song's stems) streamed in, frame embeddings streamed out
as their windows fill (OpenL3 by default).

- ``config``   — ``AudioEncoderConfig`` (env prefix ``AUDIOMEMORY_AUDIO_ENCODER_``).
- ``backends`` — the ``AudioEncoderBackend`` contract (facts + ``embed_windows``); ``backends.openl3``
  is the default.
- ``stream``   — framing, streaming resample and cross-signal batching, shared by every backend.
- ``servicer`` — the gRPC ``AudioEncoder`` servicer (validation and protobuf ⇄ numpy only).
- ``service``  — ``DEFINITION``, what ``start_service`` / ``serve_forever`` run.
"""
