"""The audio encoder service: audio in, frame embeddings with their timestamps out (OpenL3 by default).

- ``config``   — ``AudioEncoderConfig`` (env prefix ``AUDIOMEMORY_AUDIO_ENCODER_``).
- ``backends`` — the ``AudioEncoderBackend`` contract; ``backends.openl3`` is the default.
- ``servicer`` — the gRPC ``AudioEncoder`` servicer (validation and protobuf ⇄ numpy only).
- ``service``  — ``DEFINITION``, what ``start_service`` / ``serve_forever`` run.
"""
