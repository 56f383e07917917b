"""Shared service runtime: errors, tensor codec, config, backends, registry and gRPC server scaffolding.

Public modules:
- ``errors``   — the project's exception hierarchy, one gRPC status code each.
- ``codec``    — numpy/torch ⇄ ``Tensor``/``TensorChunk``/``AudioChunk``, validated, zero-copy decode.
- ``config``   — ``ServiceConfig``: typed settings from flags and ``AUDIOMEMORY_*`` env vars.
- ``backend``  — the ``Backend`` plugin contract (``load``, ``describe``, one verb) and ``ModelInfo``.
- ``registry`` — backends by name from entry points.
- ``service``  — ``start_service`` / ``serve_forever``: health, reflection, metrics, interceptor, drain.
"""
