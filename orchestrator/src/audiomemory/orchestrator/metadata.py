"""A shim for the servicer that still reads what ran from ``Describe``: the record (``record.py``) built
from the ``Describe`` infos instead of the call headers, as JSON data. It goes with that servicer: the job
that records its calls' ``Served`` headers calls ``record.build_record`` and ``record.embed_record``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from audiomemory.client import record_dict
from audiomemory.orchestrator.record import build_record, embed_record
from audiomemory.runtime import identity
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.compatibility import Infos
    from audiomemory.orchestrator.options import JobOptions


def build_metadata(*, opts: JobOptions, infos: Infos, request: dict[str, Any], **rest: Any) -> dict[str, Any]:
    """``build_record``'s record as JSON data (``client.record_dict``), each kind's header made from its
    ``Describe`` (the generator's steps and guidance: the options, else its defaults)."""
    gen = infos.generator
    painting = {"steps": opts.steps or gen.default_steps,
                "guidance": opts.guidance if opts.guidance is not None else gen.default_guidance}
    kinds: dict[str, Any] = {"separator": infos.separator, "audio_encoder": infos.audio_encoder,
             "text_encoder": infos.text_encoder, "generator": gen}
    if rest["audio"].transcript is not None and infos.transcriber is not None:
        kinds["transcriber"] = infos.transcriber
    served: dict[str, common_pb2.Served] = {
        kind: identity.served(info.model, painting if kind == "generator" else None) for kind, info in kinds.items()}
    options = json_format.ParseDict(request, orchestrator_pb2.CreateImageOptions())
    return record_dict(build_record(opts=opts, served=served, request=options, native_size=gen.native_size, **rest))


def embed_metadata(png: bytes, metadata: dict[str, Any]) -> bytes:
    """``record.embed_record`` of the record ``build_metadata`` gave."""
    return embed_record(png, json_format.ParseDict(metadata, record_pb2.ImageRecord()))
