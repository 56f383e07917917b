"""The separator service: a song in, its instrument stems out (Demucs by default).

- ``config``   — ``SeparatorConfig`` (env prefix ``AUDIOMEMORY_SEPARATOR_``).
- ``backends`` — the ``SeparatorBackend`` contract (``separate_blocks`` → ``StemBlock``s in time order;
  ``separate`` → ``Stems``); ``backends.demucs`` is the default, ``backends.overlap`` its streamed apply_model.
- ``audio``    — format conversions, whole-array and streaming (``SongBuffer``, ``StemConverter``).
- ``servicer`` — the gRPC ``Separator`` servicer (validation and protobuf ⇄ numpy only).
- ``service``  — ``DEFINITION``, what ``start_service`` / ``serve_forever`` run.
"""
