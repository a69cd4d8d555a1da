"""The OpenAI chat-completions wire format: `POST /v1/chat/completions`, unary and SSE.

Follows OpenAI's API reference:
- https://platform.openai.com/docs/api-reference/chat/create (request, what is rejected)
- https://platform.openai.com/docs/api-reference/chat/object (the `chat.completion` object)
- https://platform.openai.com/docs/api-reference/chat/streaming (`chat.completion.chunk`;
  with `stream_options.include_usage` every chunk carries `"usage": null` and a last chunk
  has `"choices": []` and the usage, before `data: [DONE]`)
- https://platform.openai.com/docs/guides/error-codes (statuses, messages, `error` object)

Content: user content parts `text`, `image_url` (a URL or a base64 data URL), `file`
(`file_data` as a data URL, or a `file_id`) and `input_audio` (`wav`/`mp3`) are checked as
the API checks them and described in the answer; `reasoning_effort` (anything but `none`)
makes the model reason, reported only as `completion_tokens_details.reasoning_tokens` (the
API returns no reasoning text). Prompt caching is automatic, as OpenAI's: a prompt prefix
(every message but the last, and the tools) of at least 1024 tokens that was seen before
is read from the cache, in 128-token steps, as `prompt_tokens_details.cached_tokens`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .content import PromptCache
from .planner import ReplyPlan, count_prompt_tokens, plan_reply
from .wire import ApiError, StreamEvent, pieces

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ROLE_LIST: Final = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
# Tool-call arguments stream in pieces of this many characters, as every provider sends
# fragments (Anthropic's `input_json_delta` too).
ARGUMENT_PIECE_CHARS: Final = 8

_ERROR_TYPES: Final = {401: "invalid_request_error", 403: "invalid_request_error", 429: "requests"}
_FAULT_DEFAULTS: Final[dict[int, tuple[str, str | None]]] = {
    400: ("Invalid request (simulated).", None),
    401: ("Incorrect API key provided (simulated).", "invalid_api_key"),
    403: ("You are not allowed to sample from this model (simulated).", None),
    404: ("The model does not exist or you do not have access to it.", "model_not_found"),
    429: ("Rate limit reached for requests (simulated).", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", None),
    502: ("Bad gateway.", None),
    503: ("The engine is currently overloaded, please try again later.", None),
    504: ("Gateway timeout.", None),
}
_DONE: Final = b"data: [DONE]\n\n"
_PART_TYPES: Final = ("text", "image_url", "input_audio", "refusal", "audio", "file")
_PART_LIST: Final = "'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'"
REASONING_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
#: Automatic prompt caching: prompts of at least this many tokens, hits in steps of 128.
CACHE_MIN_TOKENS: Final = 1024
CACHE_STEP_TOKENS: Final = 128
# Completion ids: a per-process random prefix plus a counter is unique and costs nothing.
_ID_PREFIX: Final = os.urandom(5).hex()
_ids = itertools.count(1)


# OpenAI's reasoning models refuse the deprecated `max_tokens`.
_REASONING_MODEL_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param, code)


class OpenAIFormat:
    """`POST /v1/chat/completions` as OpenAI documents it."""

    path = "/v1/chat/completions"
    stream_content_type = "text/event-stream; charset=utf-8"

    def __init__(
        self, system_fingerprint: str = "fp_simulator", cache: PromptCache | None = None
    ) -> None:
        self.system_fingerprint = system_fingerprint
        self.cache = cache or PromptCache()

    # -- requests ---------------------------------------------------------------------------

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        header = headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if header[7:].strip() != api_key:
            return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)"
            )
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _invalid("you must provide a model parameter", "model")
        self._validate_messages(body.get("messages"))
        self._validate_options(body)

    @staticmethod
    def _validate_messages(messages: Any) -> None:
        if messages is None:
            raise _invalid(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        if not isinstance(messages, list):
            raise _invalid(
                "Invalid type for 'messages': expected an array.", "messages", "invalid_type"
            )
        if not messages:
            raise _invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                "messages",
                "empty_array",
            )
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ROLES:
                raise _invalid(
                    f"Invalid value: {role!r}. Supported values are: {_ROLE_LIST}.",
                    f"messages[{i}].role",
                    "invalid_value",
                )
            content = message.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    _validate_part(f"messages[{i}].content[{j}]", part)

    @staticmethod
    def _validate_options(body: dict[str, Any]) -> None:
        temperature = body.get("temperature")
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, int | float):
                raise _invalid(
                    "Invalid type for 'temperature': expected a decimal.",
                    "temperature",
                    "invalid_type",
                )
            if not 0 <= temperature <= 2:
                above = temperature > 2
                bound = "above maximum" if above else "below minimum"
                raise _invalid(
                    f"Invalid 'temperature': decimal {bound}"
                    f" value. Expected a value {'<= 2' if above else '>= 0'}, but got "
                    f"{temperature} instead.",
                    "temperature",
                    "decimal_above_max_value" if above else "decimal_below_min_value",
                )
        if "max_tokens" in body and body["model"].startswith(_REASONING_MODEL_PREFIXES):
            raise _invalid(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        for name in ("max_tokens", "max_completion_tokens"):
            limit = body.get(name)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
                raise _invalid(f"Invalid type for '{name}': expected an integer.", name)
            if limit is not None and limit < 1:
                raise _invalid(
                    f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                    f"but got {limit} instead.",
                    name,
                    "integer_below_min_value",
                )
        stop = body.get("stop")
        if stop is not None and not (
            isinstance(stop, str)
            or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
        ):
            raise _invalid("Invalid type for 'stop': expected a string or an array.", "stop")
        tools = body.get("tools")
        if tools is not None and not (
            isinstance(tools, list)
            and all(
                isinstance(t, dict)
                and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str)
                for t in tools
            )
        ):
            raise _invalid("Invalid 'tools': each tool needs a function with a name.", "tools")
        if "tool_choice" in body and not tools:
            raise _invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
                "tool_choice",
            )
        effort = body.get("reasoning_effort")
        if effort is not None and effort not in REASONING_EFFORTS:
            listed = ", ".join(f"'{e}'" for e in REASONING_EFFORTS)
            raise _invalid(
                f"Invalid value: {effort!r}. Supported values are: {listed}.",
                "reasoning_effort",
                "invalid_value",
            )

    def model_of(self, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def wants_stream(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def plan(self, body: Any) -> ReplyPlan:
        effort = body.get("reasoning_effort")
        plan = plan_reply({**body, "reasoning": effort} if effort not in (None, "none") else body)
        return dataclasses.replace(plan, cached_tokens=self._cached(body))

    def _cached(self, body: dict[str, Any]) -> int:
        """Tokens of the prompt's prefix read from the (automatic) cache."""
        prefix, tools = body["messages"][:-1], body.get("tools") or ()
        tokens = count_prompt_tokens(prefix, tools)
        if tokens < CACHE_MIN_TOKENS or not self.cache.seen("openai", body["model"], prefix, tools):
            return 0
        return tokens - tokens % CACHE_STEP_TOKENS

    # -- answers ----------------------------------------------------------------------------

    def _usage(self, plan: ReplyPlan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.total_tokens,
            "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": plan.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _envelope(self, body: Any, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{_ID_PREFIX}{next(_ids):014x}",
            "object": kind,
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": self.system_fingerprint,
        }

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.text,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in plan.tool_calls
            ]
        completion = self._envelope(body, "chat.completion")
        completion["choices"] = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
        ]
        completion["usage"] = self._usage(plan)
        return orjson.dumps(completion)

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        """Role chunk, one chunk per word (or per arguments piece), finish chunk,
        optional usage chunk, `[DONE]`; all chunks share id and created."""
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        envelope = self._envelope(body, "chat.completion.chunk")
        if include_usage:
            envelope["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return b"data: " + orjson.dumps({**envelope, "choices": [choice]}) + b"\n\n"

        if plan.tool_calls:
            events = [StreamEvent(chunk(_tool_call_head(plan)))]
            events += [
                StreamEvent(
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), True
                )
                for i, call in enumerate(plan.tool_calls)
                for p in pieces(call.arguments, ARGUMENT_PIECE_CHARS)
            ]
        else:
            events = [StreamEvent(chunk({"role": "assistant", "content": "", "refusal": None}))]
            # Every word chunk differs only in its content: splice it into a pre-serialised
            # template instead of serialising the whole envelope per word.
            head, _, tail = chunk({"content": ""}).partition(b'"content":""')
            events += [
                StreamEvent(head + b'"content":' + orjson.dumps(piece) + tail, True)
                for piece in plan.pieces()
            ]
        events.append(StreamEvent(chunk({}, plan.finish_reason)))
        if include_usage:
            usage_chunk = {**envelope, "choices": [], "usage": self._usage(plan)}
            events.append(StreamEvent(b"data: " + orjson.dumps(usage_chunk) + b"\n\n"))
        events.append(StreamEvent(_DONE))
        return events

    # -- errors -----------------------------------------------------------------------------

    def error_body(self, error: ApiError) -> bytes:
        kind = _ERROR_TYPES.get(error.status)
        if kind is None:
            kind = "server_error" if error.status >= 500 else "invalid_request_error"
        return orjson.dumps(
            {
                "error": {
                    "message": error.message,
                    "type": kind,
                    "param": error.param,
                    "code": error.code,
                }
            }
        )

    def model_not_found(self, model: str) -> ApiError:
        return ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def fault_error(self, status: int, message: str | None) -> ApiError:
        default_message, code = _FAULT_DEFAULTS.get(status, (f"Simulated error {status}.", None))
        return ApiError(status, message or default_message, code=code)

    def malformed_body(self) -> bytes:
        return b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{'

    def malformed_event(self) -> bytes:
        return b'data: {"id": "chatcmpl-malformed", "choices": [{"delta": {"content": "\n\n'


def _validate_part(path: str, part: Any) -> None:
    """One content part, as the API checks its type and required fields."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in _PART_TYPES:
        raise _invalid(
            f"Invalid value: {kind!r}. Supported values are: {_PART_LIST}.",
            f"{path}.type",
            "invalid_value",
        )
    spec = part.get(kind) if kind != "text" else part.get("text")
    missing = f"Missing required parameter: '{path}.{kind}'."
    if kind == "text" and not isinstance(spec, str):
        raise _invalid(missing, f"{path}.text", "missing_required_parameter")
    if kind == "image_url":
        url = spec.get("url") if isinstance(spec, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
            raise _invalid(
                "Invalid 'image_url.url': expected a URL or a base64 data URL.",
                f"{path}.image_url.url",
                "invalid_value",
            )
        if spec.get("detail", "auto") not in ("auto", "low", "high"):
            raise _invalid("Invalid 'detail'.", f"{path}.image_url.detail", "invalid_value")
    if kind == "input_audio" and not (
        isinstance(spec, dict)
        and isinstance(spec.get("data"), str)
        and spec.get("format") in ("wav", "mp3")
    ):
        raise _invalid(
            "Invalid 'input_audio': expected base64 data and a format of 'wav' or 'mp3'.",
            f"{path}.input_audio",
            "invalid_value",
        )
    if kind == "file" and not (
        isinstance(spec, dict)
        and (isinstance(spec.get("file_data"), str) or isinstance(spec.get("file_id"), str))
    ):
        raise _invalid(missing, f"{path}.file", "missing_required_parameter")


def _tool_call_head(plan: ReplyPlan) -> dict[str, Any]:
    """The first delta of a tool-call stream: role, and each call's id, type, name and empty
    arguments (OpenAI announces the call before streaming its arguments)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": i,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            for i, call in enumerate(plan.tool_calls)
        ],
        "refusal": None,
    }
