"""URL parts turned into bytes for providers that take only bytes.

An adapter names which parts its API cannot take by URL (`wants_bytes`); those
are fetched through the guarded `MediaFetcher` and the adapter translates a copy
of the request in which they carry their bytes. A request without such parts is
returned as it is, at the cost of one look at each message.
"""

from __future__ import annotations

from collections.abc import Callable

from ai_service.errors import InvalidRequest
from ai_service.providers.content import DOCUMENT_MEDIA_TYPES, IMAGE_MEDIA_TYPES
from ai_service.providers.http.fetch import MediaFetcher
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, ContentPart

#: Whether an adapter's API needs this (URL) part as bytes.
WantsBytes = Callable[[ContentPart], bool]

_MEDIA_TYPES = {"image": IMAGE_MEDIA_TYPES, "document": DOCUMENT_MEDIA_TYPES}


def _url_source(part: ContentPart) -> tuple[str, str] | None:
    """(kind, url) of an image or document given by URL."""
    kind = part.WhichOneof("kind")
    if kind in _MEDIA_TYPES:
        source = getattr(part, kind)
        if source.WhichOneof("source") == "url":
            return kind, source.url
    return None


async def with_bytes(
    request: ChatCompletionRequest, wants_bytes: WantsBytes, fetcher: MediaFetcher
) -> ChatCompletionRequest:
    """`request`, or a copy of it whose URL parts the adapter wants as bytes carry them."""
    wanted = [
        (i, j)
        for i, message in enumerate(request.messages)
        for j, part in enumerate(message.parts)
        if _url_source(part) is not None and wants_bytes(part)
    ]
    if not wanted:
        return request
    copy = ChatCompletionRequest()
    copy.CopyFrom(request)
    for i, j in wanted:
        part = copy.messages[i].parts[j]
        found = _url_source(part)
        assert found is not None
        kind, url = found
        source = getattr(part, kind)
        field = f"messages[{i}].parts[{j}].{kind}.url"
        fetched = await fetcher.fetch(url, field, _MEDIA_TYPES[kind])
        if source.media_type and source.media_type != fetched.media_type:
            raise InvalidRequest(
                field, f"serves {fetched.media_type}, not {source.media_type} as the part says"
            )
        source.data = fetched.data  # replaces the url (one source of a oneof)
        source.media_type = fetched.media_type
    return copy
