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

import base64
import binascii
import dataclasses
import itertools
import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .config import SimulatorConfig
from .content import (
    PromptCache,
    effort_of_budget,
    embedding,
    redact,
    redacted_ok,
    sign,
    signature_ok,
)
from .credentials import IssuedCredentials
from .eventstream import event_frame, exception_frame
from .filters import filter_asked, filtered_answer
from .openai_format import ARGUMENT_PIECE_CHARS
from .planner import ReplyPlan, count_words, plan_reply
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
_IMAGE_FORMATS: Final = frozenset({"png", "jpeg", "gif", "webp"})
_DOCUMENT_TYPES: Final = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "csv": "text/csv",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_DOCUMENT_NAME: Final = re.compile(r"(?!.*\s\s)[A-Za-z0-9\s\-\(\)\[\]]{1,200}")
MAX_CACHE_POINTS: Final = 4
COHERE_TEXTS: Final = 96
COHERE_INPUT_TYPES: Final = frozenset(
    {"search_document", "search_query", "classification", "clustering", "image"}
)
TITAN_DIMENSIONS: Final = 1024
MIN_THINKING_BUDGET: Final = 1024
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

    routes: tuple[str, ...] = (
        "/model/{model}/converse",
        "/model/{model}/converse-stream",
        "/model/{model}/invoke",
    )

    def __init__(
        self, credentials: IssuedCredentials, config: SimulatorConfig, cache: PromptCache
    ) -> None:
        self.credentials = credentials
        self.config = config
        self.cache = cache
        self.errors = Converse(credentials, cache, "", stream=False, signed=None)

    def bind(self, request: web.Request, raw_body: bytes) -> Converse:
        signed = (request.method, request.raw_path, request.headers, raw_body)
        kind = Invoke if request.path.endswith("/invoke") else Converse
        return kind(
            self.credentials,
            self.cache,
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
        cache: PromptCache,
        model: str,
        *,
        stream: bool,
        signed: tuple[str, str, Mapping[str, str], bytes] | None,
    ) -> None:
        self.credentials = credentials
        self.cache = cache
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
                _check_block(f"messages.{i}.content", role, block)
        points = sum(1 for block in _blocks_in_order(body) if "cachePoint" in block)
        if points > MAX_CACHE_POINTS:
            raise _invalid(f"The maximum number of cache points is {MAX_CACHE_POINTS}.")
        _check_thinking(body)
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
        if filter_asked(request) == "answer":
            return filtered_answer(plan)
        read, write = self._cache(body, plan.prompt_tokens)
        return dataclasses.replace(plan, cached_tokens=read, cache_write_tokens=write)

    def _cache(self, body: dict[str, Any], prompt_tokens: int) -> tuple[int, int]:
        """(tokens read, tokens written) for the prefixes the request's cache points end."""
        blocks = _blocks_in_order(body)
        prefixes = [blocks[:i] for i, block in enumerate(blocks) if "cachePoint" in block]
        if not prefixes:
            return 0, 0
        read = 0
        for prefix in reversed(prefixes):  # the longest prefix seen before is read
            if self.cache.seen("bedrock", self.model, prefix):
                read = _prefix_tokens(prefix)
                break
        for prefix in prefixes:
            self.cache.seen("bedrock", self.model, prefix)
        read = min(read, prompt_tokens)
        write = min(max(_prefix_tokens(prefixes[-1]) - read, 0), prompt_tokens - read)
        return read, write

    # -- answers ----------------------------------------------------------------------------

    def _guarded(self, body: Any) -> bool:
        return filter_asked(to_planner(body)) == "prompt"

    def _usage(self, plan: ReplyPlan) -> dict[str, int]:
        usage = {
            "inputTokens": plan.prompt_tokens - plan.cached_tokens - plan.cache_write_tokens,
            "outputTokens": plan.completion_tokens,
            "totalTokens": plan.total_tokens,
        }
        if plan.cached_tokens or plan.cache_write_tokens:
            usage["cacheReadInputTokens"] = plan.cached_tokens
            usage["cacheWriteInputTokens"] = plan.cache_write_tokens
        return usage

    def _blocks(self, plan: ReplyPlan) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = _reasoning_blocks(plan)
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
        first = 0  # the content block index of the answer, after the reasoning blocks
        if not self._guarded(body):
            for block in _reasoning_blocks(plan):
                content = block["reasoningContent"]
                if "redactedContent" in content:  # whole, in one delta
                    deltas = [{"redactedContent": content["redactedContent"]}]
                else:
                    deltas = [{"text": piece} for piece in plan.reasoning_pieces()]
                    deltas.append({"signature": content["reasoningText"]["signature"]})
                events += [
                    StreamEvent(
                        event_frame(
                            "contentBlockDelta",
                            {"contentBlockIndex": first, "delta": {"reasoningContent": delta}},
                        ),
                        "text" in delta,
                    )
                    for delta in deltas
                ]
                events.append(
                    StreamEvent(event_frame("contentBlockStop", {"contentBlockIndex": first}))
                )
                first += 1
        if self._guarded(body):
            events += _text_block(0, [GUARDRAIL_TEXT])
            reason = "guardrail_intervened"
        elif plan.tool_calls:
            for offset, call in enumerate(plan.tool_calls):
                index = first + offset
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
            events += _text_block(first, plan.pieces())
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


class Invoke(Converse):
    """InvokeModel for the embedding families whose bodies are documented: Amazon Titan Text
    Embeddings (`{"inputText", "dimensions"}` → `{"embedding", "inputTextTokenCount"}`; one
    text per call; dimensions 256, 512 or 1024) and Cohere Embed (`{"texts", "input_type",
    "embedding_types"}` → `{"id", "texts", "embeddings": {"float": [...]}, "response_type":
    "embeddings_by_type"}`; up to 96 texts); any other model's body is refused 400."""

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("Malformed input request, please reformat your input and try again.")
        if "titan-embed" in self.model:
            if not isinstance(body.get("inputText"), str) or not body["inputText"]:
                raise _invalid("Malformed input request: #: required key [inputText] not found")
            if body.get("dimensions") not in (None, 256, 512, 1024):
                raise _invalid("Malformed input request: #/dimensions: 256, 512 or 1024")
        elif "cohere.embed" in self.model:
            texts = body.get("texts")
            if not isinstance(texts, list) or not 0 < len(texts) <= COHERE_TEXTS:
                raise _invalid("Malformed input request: #/texts: 1 to 96 texts expected")
            if body.get("input_type") not in COHERE_INPUT_TYPES:
                raise _invalid("Malformed input request: #: required key [input_type] not found")
        else:
            raise _invalid(f"The model {self.model} does not support this invocation (simulated).")

    def wants_stream(self, body: Any) -> bool:
        return False

    def plan(self, body: Any) -> ReplyPlan:
        return ReplyPlan(None, (), "stop", 0, 0)

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        if "titan-embed" in self.model:
            text = body["inputText"]
            vector = embedding(self.model, text, body.get("dimensions") or TITAN_DIMENSIONS)
            return orjson.dumps(
                {
                    "embedding": vector,
                    "inputTextTokenCount": count_words(text),
                    "embeddingsByType": {"float": vector},
                }
            )
        vectors = [embedding(self.model, text) for text in body["texts"]]
        return orjson.dumps(
            {
                "id": f"{_ID_PREFIX}-{next(_ids):012x}",
                "texts": body["texts"],
                "embeddings": {"float": vectors},
                "response_type": "embeddings_by_type",
            }
        )


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
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        request["reasoning"] = effort_of_budget(int(thinking.get("budget_tokens") or 0))
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
    media: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if "image" in block or "document" in block:
            media.append(_as_openai_part(block))
        elif "toolResult" in block:
            out.append({"role": "tool", "content": _result_text(block["toolResult"])})
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") or {}).decode()
            calls.append(
                {"type": "function", "function": {"name": use.get("name"), "arguments": arguments}}
            )
        elif isinstance(block.get("text"), str):
            text.append(block["text"])
    if text or calls or media:
        said = " ".join(text)
        parts = [{"type": "text", "text": said}] if said else []
        message: dict[str, Any] = {"role": role, "content": parts + media if media else said}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _as_openai_part(block: dict[str, Any]) -> dict[str, Any]:
    """An image or document block as the planner's (OpenAI's) part, for its description."""
    if "image" in block:
        image = block["image"]
        url = f"data:image/{image['format']};base64,{image['source']['bytes']}"
        return {"type": "image_url", "image_url": {"url": url}}
    document = block["document"]
    media = _DOCUMENT_TYPES.get(document["format"], "application/octet-stream")
    file = {"file_data": f"data:{media};base64,{document['source']['bytes']}"}
    return {"type": "file", "file": {**file, "filename": document["name"]}}


# -- content blocks, reasoning and cache points ----------------------------------------------


def _check_block(path: str, role: str, block: dict[str, Any]) -> None:
    """What Converse refuses in a content block (ImageBlock, DocumentBlock,
    ReasoningContentBlock, CachePointBlock)."""
    if "image" in block:
        image = block["image"] if isinstance(block["image"], dict) else {}
        if image.get("format") not in _IMAGE_FORMATS or not _is_base64(
            (image.get("source") or {}).get("bytes")
        ):
            raise _constraint(
                f"Value at '{path}.image'", f"format in {sorted(_IMAGE_FORMATS)}, bytes"
            )
    if "document" in block:
        document = block["document"] if isinstance(block["document"], dict) else {}
        name = document.get("name")
        if not isinstance(name, str) or not _DOCUMENT_NAME.fullmatch(name):
            raise _invalid(
                "The document file name can only contain alphanumeric characters, whitespace "
                "characters, hyphens, parentheses, and square brackets. The name can't contain "
                "more than one consecutive whitespace character."
            )
        if document.get("format") not in _DOCUMENT_TYPES or not _is_base64(
            (document.get("source") or {}).get("bytes")
        ):
            raise _constraint(f"Value at '{path}.document'", "format and bytes")
    if "reasoningContent" in block:
        if role != "assistant":
            raise _invalid("Reasoning content can only be sent in assistant messages.")
        content = block["reasoningContent"]
        if "redactedContent" in content:
            if not redacted_ok(content["redactedContent"]):
                raise _invalid("The redacted reasoning content is invalid.")
        else:
            text = content.get("reasoningText") or {}
            if not signature_ok(text.get("text"), text.get("signature")):
                raise _invalid("The signature of the reasoning text is invalid.")
    if "cachePoint" in block and (block["cachePoint"] or {}).get("type") != "default":
        raise _constraint(f"Value at '{path}.cachePoint.type'", "Member must be 'default'")


def _is_base64(value: Any) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return False
    return isinstance(value, str)


def _check_thinking(body: dict[str, Any]) -> None:
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise _invalid(
            f"thinking.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}"
        )
    limit = (body.get("inferenceConfig") or {}).get("maxTokens")
    if isinstance(limit, int) and budget >= limit:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")


def _reasoning_blocks(plan: ReplyPlan) -> list[dict[str, Any]]:
    """The answer's reasoning as Converse's blocks: redacted first (when asked), then signed."""
    if plan.reasoning is None:
        return []
    blocks: list[dict[str, Any]] = []
    if plan.redacted:
        blocks.append({"reasoningContent": {"redactedContent": redact(plan.reasoning)}})
    signed = {"text": plan.reasoning, "signature": sign(plan.reasoning)}
    return [*blocks, {"reasoningContent": {"reasoningText": signed}}]


def _blocks_in_order(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Tools, then system, then messages' blocks: the order a cached prefix runs in."""
    tools = (body.get("toolConfig") or {}).get("tools") or []
    blocks = [b for b in tools if isinstance(b, dict)]
    blocks += [b for b in body.get("system") or () if isinstance(b, dict)]
    for message in body.get("messages") or ():
        blocks += [b for b in message.get("content") or () if isinstance(b, dict)]
    return blocks


def _prefix_tokens(blocks: list[dict[str, Any]]) -> int:
    """The simulator's token count of a prefix: words of its text, tools as JSON."""
    total = 0
    for block in blocks:
        if "toolSpec" in block:
            total += count_words(json.dumps(_function_tool(block["toolSpec"])))
        elif isinstance(block.get("text"), str):
            total += count_words(block["text"])
    return total


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
