"""Reading a request's JSON field by field: each check names the field it refuses.

Shared by the OpenAI and Anthropic doors; a refusal is the gateway's INVALID_ARGUMENT
with the field's path, as a gRPC caller's bad request gets.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ai_service.errors import InvalidRequest


def refuse(field: str, description: str) -> InvalidRequest:
    return InvalidRequest(field, description)


def json_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise refuse(field, "must be an object")
    return value


def json_array(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise refuse(field, "must be an array")
    return value


def json_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise refuse(field, "must be a string")
    return value


def json_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refuse(field, "must be a number")
    return float(value)


def json_integer(value: Any, field: str) -> int:
    """An integer a proto int32 holds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(field, "must be an integer")
    if not -(2**31) <= value < 2**31:
        raise refuse(field, "is out of range")
    return value


def json_count(value: Any, field: str) -> int:
    """A non-negative integer a proto int32 holds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise refuse(field, "must be a non-negative integer")
    return value


def json_flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise refuse(field, "must be true or false")
    return value


def json_base64(value: Any, field: str) -> bytes:
    try:
        return base64.b64decode(json_text(value, field), validate=True)
    except (binascii.Error, ValueError):
        raise refuse(field, "is not valid base64") from None
