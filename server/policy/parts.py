"""Validation of a message's content parts, reasoning blocks and cache marks.

Each refusal names the part's field in the proto's JSON path
(`messages[0].parts[2].image.media_type`), as the rest of validation does.
"""

from __future__ import annotations

from ai_service.config import RequestLimits
from ai_service.errors import InvalidRequest, quoted
from ai_service.providers.content import (
    AUDIO_FORMATS,
    CACHE_TTLS,
    DOCUMENT_MEDIA_TYPES,
    IMAGE_DETAILS,
    IMAGE_MEDIA_TYPES,
    media_size,
)
from ai_service_protos.ai_service_pb2 import (
    CacheControl,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
)

#: Roles whose parts may be images, documents or audio; others take text parts only.
_MEDIA_ROLES = frozenset({"user"})


def check_parts(
    i: int, message: Message, limits: RequestLimits, parts: int, media: int
) -> tuple[int, int]:
    """Check message `i`'s parts; return the request's running (part count, media bytes)."""
    for j, part in enumerate(message.parts):
        path = f"messages[{i}].parts[{j}]"
        parts += 1
        if parts > limits.max_content_parts:
            raise InvalidRequest(
                f"messages[{i}].parts",
                f"bring the request to more than {limits.max_content_parts} content parts",
            )
        _check_part(path, message.role, part)
        media += media_size(part)
        if media > limits.max_media_bytes:
            raise InvalidRequest(
                path,
                f"brings the request's images, documents and audio to {media} bytes; the "
                f"limit is {limits.max_media_bytes} bytes",
            )
    return parts, media


def _check_part(path: str, role: str, part: ContentPart) -> None:
    kind = part.WhichOneof("kind")
    if kind is None:
        raise InvalidRequest(path, "sets no content: give text, image, document or audio")
    if kind == "text":
        if not part.text:
            raise InvalidRequest(f"{path}.text", "is empty")
    elif role not in _MEDIA_ROLES:
        raise InvalidRequest(f"{path}.{kind}", "is only allowed for role 'user'")
    elif kind == "image":
        _check_image(f"{path}.image", part.image)
    elif kind == "document":
        _check_document(f"{path}.document", part.document)
    else:
        if not part.audio.data:
            raise InvalidRequest(f"{path}.audio.data", "is required")
        _one_of(f"{path}.audio.format", part.audio.format, AUDIO_FORMATS)
    if part.HasField("cache_control"):
        check_cache_control(f"{path}.cache_control", part.cache_control)


def _check_source(path: str, source: ImagePart | DocumentPart, media_types: frozenset[str]) -> None:
    which = source.WhichOneof("source")
    if which is None:
        raise InvalidRequest(path, "needs data or url")
    if which == "data":
        if not source.data:
            raise InvalidRequest(f"{path}.data", "is empty")
        if not source.media_type:
            raise InvalidRequest(f"{path}.media_type", "is required with data")
    elif not source.url.startswith(("https://", "http://")):
        raise InvalidRequest(f"{path}.url", "must be an http or https URL")
    if source.media_type:
        _one_of(f"{path}.media_type", source.media_type, media_types)


def _check_image(path: str, image: ImagePart) -> None:
    _check_source(path, image, IMAGE_MEDIA_TYPES)
    _one_of(f"{path}.detail", image.detail, IMAGE_DETAILS)


def _check_document(path: str, document: DocumentPart) -> None:
    _check_source(path, document, DOCUMENT_MEDIA_TYPES)


def check_reasoning_blocks(i: int, message: Message) -> None:
    if message.role != "assistant":
        raise InvalidRequest(f"messages[{i}].reasoning", "is only allowed for role 'assistant'")
    for j, block in enumerate(message.reasoning):
        if not (block.text or block.signature or block.redacted_data):
            raise InvalidRequest(
                f"messages[{i}].reasoning[{j}]", "is empty: send it back as the answer gave it"
            )


def check_cache_control(path: str, mark: CacheControl) -> None:
    if mark.type not in ("", "ephemeral"):
        raise InvalidRequest(f"{path}.type", f"is {quoted(mark.type)}; expected 'ephemeral'")
    _one_of(f"{path}.ttl", mark.ttl, CACHE_TTLS)


def _one_of(path: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        shown = ", ".join(repr(v) for v in sorted(allowed) if v)
        raise InvalidRequest(path, f"is {quoted(value)}; expected one of {shown}")
