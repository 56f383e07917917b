"""The transcriber service: a vocal stem streamed in, what is sung in it (text, language, timed segments)
streamed out (Whisper by default).

- ``config``   — ``TranscriberConfig`` (env prefix ``AUDIOMEMORY_TRANSCRIBER_``), the guards included.
- ``backends`` — the ``TranscriberBackend`` contract (facts + ``decode_window``); ``backends.whisper`` is
  the default, ``backends.whisper_tiny`` writes its tiny profile.
- ``stream``   — mono mix, streaming resample (soxr), 30 s windows with seek, the silence gate; shared by
  every backend.
- ``servicer`` — the gRPC ``Transcriber`` servicer (validation and protobuf ⇄ numpy only).
- ``service``  — ``DEFINITION``, what ``start_service`` / ``serve_forever`` run.
"""
