"""The gRPC ``TextEncoder`` service: validate, call the backend under the gate, stream the result.

Limits are checked before the model is touched: too many texts is RESOURCE_EXHAUSTED (the caller
should split the batch), an over-long text is INVALID_ARGUMENT; both messages name the limit. The call opens
as every model call does (``runtime.servicer``: the pin, then the ``Served`` header with the token length and
hidden size), waits for a model slot, encodes, and sends the result once the slot is given back.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from audiomemory.runtime.codec import CHUNK_BYTES, iter_tensor_chunks, to_tensor
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.servicer import ModelServicer
from audiomemory.text_encoder.backends import TextEncoderBackend
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.v1 import common_pb2, text_encoder_pb2, text_encoder_pb2_grpc

SERVICE = "text_encoder"


class TextEncoderServicer(
    ModelServicer[TextEncoderBackend, TextEncoderConfig], text_encoder_pb2_grpc.TextEncoderServicer
):
    """Thin edge: protobuf ⇄ lists and numpy; the backend does the work."""

    kind = SERVICE
    package = "audiomemory-text-encoder"

    def info(self, model: common_pb2.ModelInfo) -> text_encoder_pb2.TextEncoderInfo:
        b = self.backend
        return text_encoder_pb2.TextEncoderInfo(
            model=model, hidden_size=b.hidden_size, max_length=b.max_length, vocab_size=b.vocab_size,
            max_texts=self.config.max_texts, max_chars=self.config.max_chars,
        )

    def _texts(self, request: text_encoder_pb2.EncodeRequest) -> list[str]:
        texts = list(request.texts)
        if not texts:
            raise InvalidInput("texts: at least one text is required, got none")
        if len(texts) > self.config.max_texts:
            raise ResourceExhausted(
                f"texts: {len(texts)} texts in one call exceed the limit of max_texts={self.config.max_texts}; "
                "split the batch"
            )
        for i, text in enumerate(texts):
            if len(text) > self.config.max_chars:
                raise InvalidInput(
                    f"texts[{i}]: {len(text)} characters exceed the limit of max_chars={self.config.max_chars}"
                )
        return texts

    def Encode(
        self, request: text_encoder_pb2.EncodeRequest, context: grpc.ServicerContext
    ) -> Iterator[text_encoder_pb2.EncodeResponse]:
        texts = self._texts(request)
        model = self.model()
        resolved = {"max_length": self.backend.max_length, "hidden_size": self.backend.hidden_size}
        with self.admitted(context, model, request.pin, resolved, text_encoder_pb2.EncodeResponse) as opening:
            yield from opening  # the header, then the slot (this response has no place in line)
            encoded = self.backend.encode(texts)
        header = text_encoder_pb2.EncodeHeader(
            token_ids=to_tensor(encoded.token_ids, dtype="int64"), truncated=encoded.truncated
        )
        yield text_encoder_pb2.EncodeResponse(header=header)
        # float32 on the wire whatever the compute dtype: fusion and the generator want full precision.
        for chunk in iter_tensor_chunks(encoded.embeddings, chunk_bytes=CHUNK_BYTES, dtype="float32"):
            yield text_encoder_pb2.EncodeResponse(embeddings=chunk)


def add_servicer(server: grpc.Server, backend: TextEncoderBackend, gate: Gate, config: TextEncoderConfig) -> None:
    text_encoder_pb2_grpc.add_TextEncoderServicer_to_server(TextEncoderServicer(backend, gate, config), server)
