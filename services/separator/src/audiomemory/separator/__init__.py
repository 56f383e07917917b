"""The separator service: a song in, its instrument stems out (Demucs by default).

- ``config``   — ``SeparatorConfig`` (env prefix ``AUDIOMEMORY_SEPARATOR_``).
- ``backends`` — the ``SeparatorBackend`` contract and its ``Stems`` result; ``backends.demucs`` is the default.
- ``servicer`` — the gRPC ``Separator`` servicer (validation and protobuf ⇄ numpy only).
- ``service``  — ``DEFINITION``, what ``start_service`` / ``serve_forever`` run.
"""
