"""Embedding vectors as the service returns them, from whatever shape the upstream sent.

The caller picks floats (`Embedding.values`) or packed little-endian float32 bytes
(`Embedding.data`, what OpenAI's base64 encoding decodes to); an upstream may
send either a JSON list of numbers or a base64 string, and each is turned into
what the caller asked for without a round trip through text when it already is.
A response must hold one vector per input, each index once: a shorter or
shuffled answer is the upstream's failure, never passed on as a partial one.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable
from typing import Any

from ai_service.errors import UpstreamUnavailable
from ai_service_protos.ai_service_pb2 import Embedding, EmbedRequest, EmbedResponse


def wants_bytes(request: EmbedRequest) -> bool:
    return request.encoding_format == "base64"


def embedding_from(index: int, vector: Any, as_bytes: bool) -> Embedding:
    """An `Embedding` from a list of numbers or a base64 string of float32 values."""
    out = Embedding(index=index)
    if isinstance(vector, str):
        try:
            packed = base64.b64decode(vector, validate=True)
        except binascii.Error:
            raise ValueError("an embedding that is neither numbers nor base64") from None
        if len(packed) % 4:
            raise ValueError("a base64 embedding whose length is not whole float32 values")
        if as_bytes:
            out.data = packed
        else:
            out.values.extend(struct.unpack(f"<{len(packed) // 4}f", packed))
        return out
    if not isinstance(vector, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in vector
    ):
        raise ValueError("an embedding that is not a list of numbers")
    if as_bytes:
        out.data = struct.pack(f"<{len(vector)}f", *vector)
    else:
        out.values.extend(vector)
    return out


def complete(
    response: EmbedResponse, embeddings: Iterable[Embedding], inputs: int, provider: str
) -> EmbedResponse:
    """`response` with `embeddings` in input order, if there is exactly one per input."""
    by_index: dict[int, Embedding] = {}
    for embedding in embeddings:
        if embedding.index in by_index or not 0 <= embedding.index < inputs:
            raise UpstreamUnavailable(
                f"upstream {provider!r} answered an embedding for input {embedding.index} "
                f"of {inputs}, or twice"
            )
        by_index[embedding.index] = embedding
    if len(by_index) != inputs:
        raise UpstreamUnavailable(
            f"upstream {provider!r} answered {len(by_index)} embeddings for {inputs} inputs"
        )
    response.embeddings.extend(by_index[i] for i in range(inputs))
    return response
