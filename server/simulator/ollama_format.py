"""Ollama's native chat wire format: `POST /api/chat`, unary and newline-delimited JSON.

Follows https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(also https://docs.ollama.com/api/chat):
- the request: `model`, `messages` (tool calls with `arguments` as an object, `tool_name`
  on tool results), `tools`, `format`, `options` (`num_predict`, `stop`, `temperature`,
  `seed`, …), `stream` — which is *on* unless sent `false`;
- the answer: `{"model", "created_at", "message", "done": true, "done_reason",
  "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
  "eval_count", "eval_duration"}`; streamed, one such object per line with a piece of the
  message and `done: false`, and the statistics on the last line only. Tool calls come
  whole, in one line, with no id; `done_reason` stays `stop` for them.
- errors: `{"error": "…"}` with the status (`model "x" not found, try pulling it first`).

The answer is planned from the same conversation in OpenAI's shape (`to_planner`):
`options.num_predict` is the `max_tokens`, `options.stop` the `stop`, tool-call arguments
compact JSON text.

Content (https://github.com/ollama/ollama/blob/main/docs/api.md, `api/types.go`): a
message's `images` are raw base64 strings (no data URL), described in the answer by the
type their bytes show; `think` (`true`/`false` or `"low"`/`"medium"`/`"high"`/`"max"`,
https://docs.ollama.com/capabilities/thinking) makes the model reason, returned in
`message.thinking` (streamed as lines with `thinking` before the content lines).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from .planner import ReplyPlan, plan_reply
from .wire import ApiError, StreamEvent

ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
THINK_LEVELS: Final = ("low", "medium", "high", "max")
_IMAGE_MAGIC: Final = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)
_FAULT_MESSAGES: Final = {
    400: "invalid request (simulated)",
    401: "unauthorized",
    403: "forbidden",
    404: "model not found (simulated)",
    429: "too many requests (simulated)",
    500: "llama runner process has terminated (simulated)",
    503: "server busy, please try again. maximum pending requests exceeded",
}
# Made-up but plausible nanosecond durations: the simulator does no real work.
_NANOS_PER_TOKEN: Final = 1_000_000


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


def _line(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload) + b"\n"


class OllamaFormat:
    """`POST /api/chat` as Ollama documents it."""

    path = "/api/chat"
    stream_content_type = "application/x-ndjson"

    # -- requests ---------------------------------------------------------------------------

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        # Ollama has no keys of its own; ollama.com and the proxies in front of it take a bearer.
        header = headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:].strip() != api_key:
            return ApiError(401, "unauthorized")
        return None

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("invalid character looking for beginning of value")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _invalid("model is required")
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise _invalid("json: cannot unmarshal messages into []api.Message")
        for message in messages or ():
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ROLES:
                raise _invalid(f"invalid role: {role}")
            images = message.get("images")
            if images is not None and not (
                isinstance(images, list) and all(_image_bytes(i) is not None for i in images)
            ):
                raise _invalid("json: cannot unmarshal images into []api.ImageData")
        think = body.get("think")
        if think is not None and not (isinstance(think, bool) or think in THINK_LEVELS):
            raise _invalid(f"invalid think value: {think!r}")
        options = body.get("options")
        if options is not None and not isinstance(options, dict):
            raise _invalid("json: cannot unmarshal options into map[string]interface {}")
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
            raise _invalid("json: cannot unmarshal tools into []api.Tool")

    def model_of(self, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def wants_stream(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is not False

    def plan(self, body: Any) -> ReplyPlan:
        return plan_reply(to_planner(body))

    # -- answers ----------------------------------------------------------------------------

    def _head(self, body: Any) -> dict[str, Any]:
        return {"model": body["model"], "created_at": _now()}

    def _final(self, body: Any, plan: ReplyPlan, message: dict[str, Any]) -> dict[str, Any]:
        eval_nanos = plan.completion_tokens * _NANOS_PER_TOKEN
        return {
            **self._head(body),
            "message": message,
            "done_reason": "length" if plan.finish_reason == "length" else "stop",
            "done": True,
            "total_duration": eval_nanos + 2 * _NANOS_PER_TOKEN,
            "load_duration": _NANOS_PER_TOKEN,
            "prompt_eval_count": plan.prompt_tokens,
            "prompt_eval_duration": _NANOS_PER_TOKEN,
            "eval_count": plan.completion_tokens,
            "eval_duration": eval_nanos,
        }

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text or ""}
        if plan.reasoning:
            message["thinking"] = plan.reasoning
        if plan.tool_calls:
            message["tool_calls"] = _tool_calls(plan)
        return orjson.dumps(self._final(body, plan, message))

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        """One line per word (or one with the tool calls), then the `done: true` line."""
        head = self._head(body)

        def line(message: dict[str, Any]) -> bytes:
            return _line({**head, "message": {"role": "assistant", **message}, "done": False})

        events = [
            StreamEvent(line({"content": "", "thinking": piece}), True)
            for piece in plan.reasoning_pieces()
        ]
        if plan.tool_calls:
            events += [StreamEvent(line({"content": "", "tool_calls": _tool_calls(plan)}), True)]
        else:
            events += [StreamEvent(line({"content": piece}), True) for piece in plan.pieces()]
        final = self._final(body, plan, {"role": "assistant", "content": ""})
        events.append(StreamEvent(_line(final)))
        return events

    # -- errors -----------------------------------------------------------------------------

    def error_body(self, error: ApiError) -> bytes:
        return orjson.dumps({"error": error.message})

    def model_not_found(self, model: str) -> ApiError:
        return ApiError(404, f'model "{model}" not found, try pulling it first')

    def fault_error(self, status: int, message: str | None) -> ApiError:
        return ApiError(status, message or _FAULT_MESSAGES.get(status, f"simulated error {status}"))

    def malformed_body(self) -> bytes:
        return b'{"model": "malformed", "message": {"role": "assistant", "content": '

    def malformed_event(self) -> bytes:
        return b'{"model": "malformed", "message": {"role": "assistant", "content": "\n'


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _image_bytes(image: Any) -> bytes | None:
    if not isinstance(image, str):
        return None
    try:
        return base64.b64decode(image, validate=True)
    except binascii.Error:
        return None


def _image_part(image: str) -> dict[str, Any]:
    """An Ollama image as the planner's (OpenAI's) part: a data URL of the type it shows."""
    data = _image_bytes(image) or b""
    media_type = next(
        (kind for magic, kind in _IMAGE_MAGIC if data.startswith(magic)),
        "application/octet-stream",
    )
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{image}"}}


def _tool_calls(plan: ReplyPlan) -> list[dict[str, Any]]:
    return [
        {"function": {"name": call.name, "arguments": orjson.loads(call.arguments)}}
        for call in plan.tool_calls
    ]


# -- the planner's view of an /api/chat request ----------------------------------------------


def to_planner(body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation in OpenAI's chat-completions shape, for `plan_reply`."""
    messages = []
    for message in body.get("messages") or ():
        out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("images"):
            said = out["content"]
            parts = [{"type": "text", "text": said}] if said else []
            out["content"] = parts + [_image_part(image) for image in message["images"]]
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [
                {
                    "type": "function",
                    "function": {
                        "name": call["function"].get("name"),
                        "arguments": orjson.dumps(call["function"].get("arguments") or {}).decode(),
                    },
                }
                for call in calls
                if isinstance(call, dict) and isinstance(call.get("function"), dict)
            ]
        messages.append(out)
    options = body.get("options") or {}
    request: dict[str, Any] = {"messages": messages}
    think = body.get("think")
    if think is True or think in THINK_LEVELS:
        request["reasoning"] = "medium" if think is True else think
    if body.get("tools"):
        request["tools"] = body["tools"]
    limit = options.get("num_predict")
    if isinstance(limit, int) and limit > 0:  # -1 (and -2) mean "no limit" to Ollama
        request["max_tokens"] = limit
    if options.get("stop"):
        request["stop"] = options["stop"]
    return request
