"""AWS Bedrock's Converse API: `POST /model/{modelId}/converse` and `/converse-stream`.

From the bedrock-runtime service model (botocore's data/bedrock-runtime/2023-09-30/
service-2.json, which generates https://docs.aws.amazon.com/bedrock/latest/APIReference/)
and https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference.html:

- The request: `messages` (`role` `user`|`assistant`, alternating from `user`; `content`
  blocks, each exactly one of `text`, `toolUse{toolUseId,name,input}`,
  `toolResult{toolUseId,content:[{text}|{json}],status}`, …), `system` (`[{text}]`),
  `inferenceConfig` (`maxTokens` ≥ 1, `temperature` and `topP` 0..1, `stopSequences`),
  `toolConfig` (`tools[].toolSpec{name,description,inputSchema{json}}`, `toolChoice`
  `{auto:{}}`|`{any:{}}`|`{tool:{name}}`), required whenever the messages hold tool blocks.
- The answer: `{"output": {"message": {"role": "assistant", "content": [...]}},
  "stopReason": "end_turn"|"tool_use"|"max_tokens"|"stop_sequence"|"content_filtered",
  "usage": {"inputTokens", "outputTokens", "totalTokens"}, "metrics": {"latencyMs"}}`.
- The stream (`application/vnd.amazon.eventstream`): binary frames (eventstream.py), each
  an event with its `:event-type` and a JSON payload without the event's name:
  `messageStart`, `contentBlockStart` (tool use only), `contentBlockDelta` (`text`, or a
  piece of a tool's `input` JSON), `contentBlockStop`, `messageStop`, `metadata` (usage).
  A failure after the 200 is an exception frame (`:message-type: exception`, the
  lowerCamel `:exception-type`: `throttlingException`, `modelStreamErrorException`, …).
- Errors: the status, the exception's name in `x-amzn-ErrorType`, and `{"message": ...}`.
- Auth: every request signed with Signature Version 4 (service `bedrock`), checked with
  the simulator's `api_key` as the secret access key (any access key id), or with
  temporary credentials its STS endpoint issued (and their session token), until they
  expire; or a Bedrock API key, `Authorization: Bearer <api_key>`.

`/filter prompt` (filters.py) is stopped as a guardrail stops it (`stopReason:
guardrail_intervened`, the guardrail's canned text); `/filter answer` ends
`content_filtered` with no text. The conversation is planned in OpenAI's shape
(`to_planner`): tool results are tool messages (their text, or their JSON compact).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .config import SimulatorConfig
from .credentials import IssuedCredentials
from .eventstream import event_frame, exception_frame
from .filters import filter_asked, filtered_answer
from .openai_format import ARGUMENT_PIECE_CHARS
from .planner import ReplyPlan, plan_reply
from .sigv4 import SigningKey, verify
from .wire import ApiError, StreamEvent, pieces

if TYPE_CHECKING:
    from aiohttp import web

#: The exception each status stands for: (the operation's error shape, the stream's member).
EXCEPTIONS: Final = {
    400: ("ValidationException", "validationException"),
    401: ("UnrecognizedClientException", None),
    403: ("AccessDeniedException", None),
    404: ("ResourceNotFoundException", None),
    408: ("ModelTimeoutException", None),
    424: ("ModelStreamErrorException", "modelStreamErrorException"),
    429: ("ThrottlingException", "throttlingException"),
    500: ("InternalServerException", "internalServerException"),
    503: ("ServiceUnavailableException", "serviceUnavailableException"),
}
_FAULT_MESSAGES: Final = {
    400: "Malformed input request (simulated).",
    403: "You don't have access to the model with the specified model ID.",
    404: "Could not resolve the foundation model from the provided model identifier.",
    408: "Model has timed out in processing the request (simulated).",
    424: "The model stream failed (simulated).",
    429: "Too many requests, please wait before trying again.",
    500: "The server encountered an internal error (simulated).",
    503: "The service is unavailable. Please try again later (simulated).",
}
_STOP_REASONS: Final = {"length": "max_tokens", "tool_calls": "tool_use"}
_BLOCK_KINDS: Final = frozenset(
    {"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent",
     "cachePoint", "reasoningContent", "citationsContent", "searchResult"}
)  # fmt: skip
GUARDRAIL_TEXT: Final = "Sorry, the model cannot answer this question."
_ID_PREFIX: Final = os.urandom(4).hex()
_ids = itertools.count(1)


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, code="ValidationException")


def _constraint(what: str, constraint: str) -> ApiError:
    return _invalid(
        f"1 validation error detected: {what} failed to satisfy constraint: {constraint}"
    )


class BedrockFormat:
    """The Converse routes; each request is served by a `Converse` for its model."""

    routes: tuple[str, ...] = ("/model/{model}/converse", "/model/{model}/converse-stream")

    def __init__(self, credentials: IssuedCredentials, config: SimulatorConfig) -> None:
        self.credentials = credentials
        self.config = config
        self.errors = Converse(credentials, "", stream=False, signed=None)

    def bind(self, request: web.Request, raw_body: bytes) -> Converse:
        signed = (request.method, request.raw_path, request.headers, raw_body)
        return Converse(
            self.credentials,
            request.match_info["model"],
            stream=request.path.endswith("/converse-stream"),
            signed=signed,
        )


class Converse:
    """One Converse or ConverseStream request, for `model`."""

    path = "/model"
    stream_content_type = "application/vnd.amazon.eventstream"

    def __init__(
        self,
        credentials: IssuedCredentials,
        model: str,
        *,
        stream: bool,
        signed: tuple[str, str, Mapping[str, str], bytes] | None,
    ) -> None:
        self.credentials = credentials
        self.model = model
        self.stream = stream
        self.signed = signed

    # -- requests ---------------------------------------------------------------------------

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Bearer "):  # a Bedrock API key
            if authorization[7:].strip() == api_key:
                return None
            return ApiError(
                403,
                "Invalid API Key format: Must start with pre-defined prefix",
                code="AccessDeniedException",
            )
        assert self.signed is not None
        method, raw_path, signed_headers, body = self.signed

        def key_for(key_id: str) -> SigningKey:
            issued = self.credentials.aws_key(key_id)  # temporary credentials from STS
            if issued is not None:
                return SigningKey(*issued)
            return SigningKey(api_key)

        problem = verify(method, raw_path, signed_headers, body, service="bedrock", key_for=key_for)
        if problem is None:
            return None
        return ApiError(403, problem.message, code=problem.code)

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("Malformed input request, please reformat your input and try again.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("The messages field is required and must not be empty.")
        uses_tools = False
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                raise _constraint(
                    f"Value '{role}' at 'messages.{i + 1}.member.role'",
                    "Member must satisfy enum value set: [user, assistant]",
                )
            if i == 0 and role != "user":
                raise _invalid(
                    "A conversation must start with a user message. Try again with a "
                    "conversation that starts with a user message."
                )
            if i and messages[i - 1].get("role") == role:
                raise _invalid(
                    "A conversation must alternate between user and assistant roles. Make sure "
                    "the conversation alternates between user and assistant roles and try again."
                )
            content = message.get("content")
            if not isinstance(content, list) or not content:
                raise _invalid(
                    f"The content field in the Message object at messages.{i} is empty. Add a "
                    f"ContentBlock object to the content field and try again."
                )
            for block in content:
                if not isinstance(block, dict) or len(block) != 1 or not set(block) <= _BLOCK_KINDS:
                    raise _invalid(
                        f"Malformed input request: messages.{i}.content: each block must set "
                        f"exactly one member."
                    )
                uses_tools = uses_tools or "toolUse" in block or "toolResult" in block
        tools = (body.get("toolConfig") or {}).get("tools")
        if uses_tools and not tools:
            raise _invalid(
                "The toolConfig field must be defined when using toolUse and toolResult "
                "content blocks."
            )
        config = body.get("inferenceConfig") or {}
        limit = config.get("maxTokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise _constraint(
                "Value at 'inferenceConfig.maxTokens'",
                "Member must have value greater than or equal to 1",
            )
        for name in ("temperature", "topP"):
            value = config.get(name)
            if isinstance(value, int | float) and not 0 <= value <= 1:
                raise _constraint(
                    f"Value '{value}' at 'inferenceConfig.{name}'",
                    "Member must have value less than or equal to 1",
                )

    def model_of(self, body: Any) -> str | None:
        return self.model

    def wants_stream(self, body: Any) -> bool:
        return self.stream

    def plan(self, body: Any) -> ReplyPlan:
        request = to_planner(body)
        plan = plan_reply(request)
        return filtered_answer(plan) if filter_asked(request) == "answer" else plan

    # -- answers ----------------------------------------------------------------------------

    def _guarded(self, body: Any) -> bool:
        return filter_asked(to_planner(body)) == "prompt"

    def _usage(self, plan: ReplyPlan) -> dict[str, int]:
        return {
            "inputTokens": plan.prompt_tokens,
            "outputTokens": plan.completion_tokens,
            "totalTokens": plan.total_tokens,
        }

    def _blocks(self, plan: ReplyPlan) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if plan.text:
            blocks.append({"text": plan.text})
        blocks += [
            {
                "toolUse": {
                    "toolUseId": tool_use_id(call.id),
                    "name": call.name,
                    "input": orjson.loads(call.arguments),
                }
            }
            for call in plan.tool_calls
        ]
        return blocks

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        if self._guarded(body):
            blocks, reason = [{"text": GUARDRAIL_TEXT}], "guardrail_intervened"
        else:
            blocks, reason = self._blocks(plan), stop_reason(plan)
        return orjson.dumps(
            {
                "output": {"message": {"role": "assistant", "content": blocks}},
                "stopReason": reason,
                "usage": self._usage(plan),
                "metrics": {"latencyMs": 1 + plan.completion_tokens},
            }
        )

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        """messageStart, the content blocks (text word by word; each tool use announced by a
        contentBlockStart, then its input in pieces), messageStop, metadata."""
        events = [StreamEvent(event_frame("messageStart", {"role": "assistant"}))]
        reason = stop_reason(plan)
        if self._guarded(body):
            events += _text_block(0, [GUARDRAIL_TEXT])
            reason = "guardrail_intervened"
        elif plan.tool_calls:
            for index, call in enumerate(plan.tool_calls):
                start = {"toolUse": {"toolUseId": tool_use_id(call.id), "name": call.name}}
                events.append(
                    StreamEvent(
                        event_frame(
                            "contentBlockStart", {"contentBlockIndex": index, "start": start}
                        )
                    )
                )
                events += [
                    StreamEvent(
                        event_frame(
                            "contentBlockDelta",
                            {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}},
                        ),
                        True,
                    )
                    for piece in pieces(call.arguments, ARGUMENT_PIECE_CHARS)
                ]
                events.append(
                    StreamEvent(event_frame("contentBlockStop", {"contentBlockIndex": index}))
                )
        elif plan.text:
            events += _text_block(0, plan.pieces())
        events.append(StreamEvent(event_frame("messageStop", {"stopReason": reason})))
        metadata = {
            "usage": self._usage(plan),
            "metrics": {"latencyMs": 1 + plan.completion_tokens},
        }
        events.append(StreamEvent(event_frame("metadata", metadata)))
        return events

    # -- errors -----------------------------------------------------------------------------

    def error_body(self, error: ApiError) -> bytes:
        return orjson.dumps({"message": error.message})

    def error_headers(self, error: ApiError) -> dict[str, str]:
        headers = {"x-amzn-RequestId": f"{_ID_PREFIX}-{next(_ids):012x}"}
        if error.code is not None:
            kind = f"{error.code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            headers["x-amzn-ErrorType"] = kind
        return headers

    def error_event(self, error: ApiError) -> bytes:
        member = EXCEPTIONS.get(error.status, (None, None))[1] or "internalServerException"
        payload: dict[str, Any] = {"message": error.message}
        if member == "modelStreamErrorException":
            payload.update(originalStatusCode=500, originalMessage=error.message)
        return exception_frame(member, payload)

    def model_not_found(self, model: str) -> ApiError:
        return ApiError(
            404,
            "The provided model identifier is invalid.",
            code="ResourceNotFoundException",
        )

    def fault_error(self, status: int, message: str | None) -> ApiError:
        name = EXCEPTIONS[status][0] if status in EXCEPTIONS else None
        return ApiError(
            status, message or _FAULT_MESSAGES.get(status, f"Simulated error {status}."), code=name
        )

    def malformed_body(self) -> bytes:
        return b'{"output": {"message": {"role": "assistant", "content": [{'

    def malformed_event(self) -> bytes:
        frame = bytearray(
            event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
        )
        frame[-1] ^= 0xFF  # the message CRC no longer matches
        return bytes(frame)


def _text_block(index: int, texts: list[str]) -> list[StreamEvent]:
    events = [
        StreamEvent(
            event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}}),
            True,
        )
        for text in texts
    ]
    events.append(StreamEvent(event_frame("contentBlockStop", {"contentBlockIndex": index})))
    return events


def tool_use_id(planned: str) -> str:
    return "tooluse_" + planned.removeprefix("call_")


def stop_reason(plan: ReplyPlan) -> str:
    if plan.finish_reason == "content_filter":
        return "content_filtered"
    if plan.finish_reason in _STOP_REASONS:
        return _STOP_REASONS[plan.finish_reason]
    return "stop_sequence" if plan.stop_sequence is not None else "end_turn"


# -- the planner's view of a Converse request ------------------------------------------------


def to_planner(body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation in OpenAI's chat-completions shape, for `plan_reply`."""
    messages: list[dict[str, Any]] = []
    system = " ".join(
        block["text"]
        for block in body.get("system") or ()
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    )
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or ():
        messages += _split(message.get("role", "user"), message.get("content") or ())
    request: dict[str, Any] = {"messages": messages}
    config = body.get("inferenceConfig") or {}
    if config.get("maxTokens"):
        request["max_tokens"] = config["maxTokens"]
    if config.get("stopSequences"):
        request["stop"] = config["stopSequences"]
    tool_config = body.get("toolConfig") or {}
    specs = [tool["toolSpec"] for tool in tool_config.get("tools") or () if "toolSpec" in tool]
    if specs:
        request["tools"] = [_function_tool(spec) for spec in specs]
    choice = tool_config.get("toolChoice") or {}
    if "tool" in choice:
        name = choice["tool"].get("name")
        request["tool_choice"] = {"type": "function", "function": {"name": name}}
    return request


def _split(role: str, content: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if "toolResult" in block:
            out.append({"role": "tool", "content": _result_text(block["toolResult"])})
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") or {}).decode()
            calls.append(
                {"type": "function", "function": {"name": use.get("name"), "arguments": arguments}}
            )
        elif isinstance(block.get("text"), str):
            text.append(block["text"])
    if text or calls:
        message: dict[str, Any] = {"role": role, "content": " ".join(text)}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _result_text(result: dict[str, Any]) -> str:
    return " ".join(
        item["text"] if "text" in item else orjson.dumps(item.get("json")).decode()
        for item in result.get("content") or ()
        if isinstance(item, dict)
    )


def _function_tool(spec: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.get("name")}
    if "description" in spec:
        function["description"] = spec["description"]
    schema = (spec.get("inputSchema") or {}).get("json")
    if schema is not None:
        function["parameters"] = schema
    return {"type": "function", "function": function}
