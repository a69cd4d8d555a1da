"""The AWS Bedrock adapter: the Converse and ConverseStream APIs, SigV4-signed.

`base_url` is the region's runtime host, `https://bedrock-runtime.{region}.amazonaws.com`;
the adapter posts to `/model/{modelId}/converse` and `/converse-stream` (the model id
percent-encoded, as botocore sends it). Follows the bedrock-runtime API reference
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
API_runtime_ConverseStream.html; the same shapes as botocore's service model):

- request: `messages` (`user`/`assistant`, alternating, from `user`) of content blocks
  (`text`, `toolUse{toolUseId,name,input}`, `toolResult{toolUseId,content,status}`),
  `system` blocks, `inferenceConfig` (`maxTokens`, `temperature` and `topP` 0..1,
  `stopSequences`), `toolConfig` (`tools[].toolSpec{name,description,inputSchema.json}`,
  `toolChoice` `auto`/`any`/`tool`);
- answer: `output.message.content`, `stopReason`, `usage` (`inputTokens`,
  `outputTokens`, `totalTokens`, `cacheReadInputTokens`, `cacheWriteInputTokens`);
- stream: AWS event-stream frames (eventstream.py, botocore's CRC-checked parser):
  `messageStart`, `contentBlockStart` (a tool use's id and name), `contentBlockDelta`
  (text; a piece of a tool's input JSON), `contentBlockStop`, `messageStop` (the stop
  reason), `metadata` (usage, the last event); a failure after the 200 is an exception
  frame whose `:exception-type` (`throttlingException`, `modelStreamErrorException`,
  `validationException`, `internalServerException`, `serviceUnavailableException`, …)
  is mapped as its HTTP status would be (docs/errors.md), a model's own failure as
  UNAVAILABLE;
- errors: the status, the exception's name in `x-amzn-ErrorType`, `{"message": ...}`.

Auth: SigV4 (credentials/aws.py), or a Bedrock API key as `Authorization: Bearer` when
`api_key` is set. What Converse has no field for: `seed`, the penalties, `user` and `name`
are dropped (best effort by the contract); `response_format` other than text and a
temperature above 1 are refused. A tool result goes back as text. `tool_choice` `none`
sends no tools, unless the conversation already holds tool calls: Converse then requires
the tools, and cannot be told not to call them.

Content (https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference-call.html,
.../claude-messages-extended-thinking.html, .../prompt-caching.html): images and documents
go as bytes (`image{format,source.bytes}`, `document{format,name,source.bytes}`, the name
cut to the characters Bedrock allows), a URL part fetched first; audio and an image
`detail` are refused. Reasoning goes to Claude models as
`additionalModelRequestFields.thinking` (the Anthropic adapter's rules: an effort as
1024/4096/16384 tokens, `maxTokens` the model's default plus the budget when unset, no
temperature, top_p from 0.95, no forced tool); `reasoningContent` blocks (signed
`reasoningText`, `redactedContent`) come back as reasoning blocks, streamed as deltas,
and go back first in their turn. A cache mark is a `cachePoint` block after what it
marks (at most 4); `cacheReadInputTokens` and `cacheWriteInputTokens` are the usage
details. Embeddings are InvokeModel with the documented bodies of Amazon Titan Text
Embeddings and Cohere Embed; other families are refused naming the model.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from botocore.eventstream import EventStreamMessage

from ai_service.config import ProviderSettings
from ai_service.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from ai_service.providers.anthropic import FALLBACK_MAX_TOKENS, thinking_of, thinking_refusal
from ai_service.providers.base import Deployment, parse_json_body, request_json
from ai_service.providers.content import b64, cache_marks
from ai_service.providers.credentials.aws import SigV4
from ai_service.providers.embeddings import complete, embedding_from, wants_bytes
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.eventstream import iter_event_batches
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.media import with_bytes
from ai_service.providers.status_mapping import error_from_status, message_in_error_payload
from ai_service.providers.translation import (
    EMPTY_OBJECT_SCHEMA,
    SYSTEM_ROLES,
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
    hide_reasoning_text,
    keeps_reasoning_text,
    new_id,
    set_usage,
    text_chunk,
    tool_choice_of,
    translate_failure,
)
from ai_service_protos.ai_service_pb2 import (
    CacheControl,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    EmbedRequest,
    EmbedResponse,
    Message,
    ReasoningBlock,
    ToolCall,
    Usage,
)

#: Converse's temperature and top_p range is 0 to 1 (InferenceConfiguration).
MAX_TEMPERATURE = 1.0
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
#: Stop reasons that say the model failed to produce a usable answer.
FAILED_STOP_REASONS = frozenset({"malformed_model_output", "malformed_tool_use"})
#: The HTTP status each error stands for, by its exception name (the operation's shape
#: name, and the stream's lowerCamel member); a model's own failure (424) as a 503.
ERROR_STATUS = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 403,
    "invalidsignatureexception": 403,
    "expiredtokenexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "servicequotaexceededexception": 429,
    "throttlingexception": 429,
    "modelnotreadyexception": 503,
    "modelerrorexception": 503,
    "modelstreamerrorexception": 503,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
}
_TOOL_CHOICES: dict[str, dict[str, Any]] = {"auto": {"auto": {}}, "required": {"any": {}}}


class BedrockProvider:
    kind = "bedrock"
    refuses_requests = True
    carries = frozenset(
        {"vision", "documents", "reasoning", "tools", "prompt_caching", "embeddings"}
    )

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self.name = settings.name
        self._media = media or MediaFetcher()
        self._models_url = f"{settings.base_url.rstrip('/')}/model/"
        self._endpoint = UpstreamEndpoint(
            settings,
            "",
            stream_accept="application/vnd.amazon.eventstream",
            # A Bedrock API key is a bearer; without one, every request is signed.
            auth=None if settings.api_key is not None else SigV4(settings),
            map_error=error_from_response,
            http=http,
        )

    def _url(self, deployment: Deployment, operation: str) -> str:
        return f"{self._models_url}{quote(deployment.upstream_model, safe='')}/{operation}"

    async def _body(
        self, request: ChatCompletionRequest, deployment: Deployment, default_max_tokens: int | None
    ) -> bytes:
        # Converse takes media as bytes (or from S3): a URL part is fetched first.
        request = await with_bytes(request, _any_url, self._media)
        return request_json(request_body(request, deployment.upstream_model, default_max_tokens))

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> ChatCompletionResponse:
        body = await self._body(request, deployment, default_max_tokens)
        url = self._url(deployment, "converse")
        payload = await self._endpoint.fetch(body, "a Converse answer", url)
        response = translate_failure(response_from_bedrock, payload, deployment.upstream_model)
        if not keeps_reasoning_text(request):
            hide_reasoning_text(response)
        return response

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = await self._body(request, deployment, default_max_tokens)
        url = self._url(deployment, "converse-stream")
        async with self._endpoint.stream(body, url) as response:
            translator = StreamTranslator(
                self.name, deployment.upstream_model, keeps_reasoning_text(request)
            )
            async for frames in iter_event_batches(response.iter_bytes()):
                ready: list[ChatCompletionChunk] = []
                for frame in frames:
                    ready += translator.feed(frame)
                for chunk in coalesce(ready):
                    yield chunk
                if translator.done:
                    return
        yield translator.last_chunk()  # the body ended after messageStop, with no metadata

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return request_refusal(request)

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        family = embedding_family(deployment.upstream_model, request)
        url = self._url(deployment, "invoke")
        response = EmbedResponse(model=deployment.upstream_model)
        as_bytes = wants_bytes(request)
        if family == "titan":  # one text per call
            bodies = [titan_body(request, text) for text in request.inputs]
            answers = await asyncio.gather(
                *(self._endpoint.fetch(orjson.dumps(body), "an embedding", url) for body in bodies)
            )
            embeddings = [
                translate_failure(_titan_vector, answer, i, as_bytes)
                for i, answer in enumerate(answers)
            ]
            tokens = sum(int(answer.get("inputTextTokenCount") or 0) for answer in answers)
            set_usage(response.usage, tokens, 0)
        else:  # cohere: up to 96 texts per call
            texts = list(request.inputs)
            batches = [texts[at : at + COHERE_BATCH] for at in range(0, len(texts), COHERE_BATCH)]
            answers = await asyncio.gather(
                *(
                    self._endpoint.fetch(orjson.dumps(cohere_body(batch)), "embeddings", url)
                    for batch in batches
                )
            )
            embeddings = []
            for number, answer in enumerate(answers):
                vectors = translate_failure(_cohere_vectors, answer)
                embeddings += [
                    embedding_from(number * COHERE_BATCH + i, vector, as_bytes)
                    for i, vector in enumerate(vectors)
                ]
        return complete(response, embeddings, len(request.inputs), self.name)

    async def aclose(self) -> None:
        await self._endpoint.aclose()


def _any_url(part: ContentPart) -> bool:
    return True


# --- embeddings: InvokeModel with each family's documented body -------------------------------

#: Texts one Cohere Embed call takes (the model's parameters page).
COHERE_BATCH = 96


def embedding_family(model: str, request: EmbedRequest) -> str:
    """ "titan" or "cohere": the families whose InvokeModel bodies are documented
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html,
    .../model-parameters-embed.html); others are refused naming the model."""
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        if request.HasField("dimensions"):
            raise InvalidRequest("dimensions", "Cohere Embed on Bedrock takes no dimensions")
        return "cohere"
    raise InvalidRequest(
        "model",
        f"Bedrock model {model!r} has no embedding body the gateway knows "
        f"(Amazon Titan Text Embeddings and Cohere Embed do)",
    )


def titan_body(request: EmbedRequest, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"inputText": text}
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions  # 256, 512 or 1024 (v2)
    return body


def cohere_body(texts: list[str]) -> dict[str, Any]:
    return {"texts": texts, "input_type": "search_document", "embedding_types": ["float"]}


def _titan_vector(payload: dict[str, Any], index: int, as_bytes: bool) -> Any:
    return embedding_from(index, payload["embedding"], as_bytes)


def _cohere_vectors(payload: dict[str, Any]) -> list[Any]:
    embeddings = payload["embeddings"]
    vectors = embeddings["float"] if isinstance(embeddings, dict) else embeddings
    if not isinstance(vectors, list):
        raise ValueError("embeddings is not a list")
    return vectors


# --- request: proto → Converse JSON ---------------------------------------------------

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/plain": "txt"}
#: Cache points one request may carry (the prompt-caching guide).
MAX_CACHE_POINTS = 4
#: What a document's name may hold (DocumentBlock.name); anything else becomes "-".
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9\s\-\(\)\[\]]")


def request_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    """What Converse cannot take, refused before a call."""
    if request.HasField("response_format") and request.response_format.type not in ("", "text"):
        return InvalidRequest(
            "response_format.type",
            f"{request.response_format.type!r} is not supported by Bedrock's Converse API",
        )
    for field in ("temperature", "top_p"):
        if request.HasField(field) and getattr(request, field) > MAX_TEMPERATURE:
            return InvalidRequest(
                field,
                f"is {getattr(request, field):g}; Bedrock's Converse API takes 0 to "
                f"{MAX_TEMPERATURE:g}",
            )
    first = next((m for m in request.messages if m.role not in SYSTEM_ROLES), None)
    if first is not None and first.role == "assistant":
        return InvalidRequest(
            "messages", "Bedrock's Converse API needs the conversation to start with a user message"
        )
    return _content_refusal(request) or thinking_refusal(request)


def _content_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            path = f"messages[{i}].parts[{j}]"
            kind = part.WhichOneof("kind")
            if kind == "audio":
                return InvalidRequest(f"{path}.audio", "Bedrock's Converse API takes no audio")
            if kind == "image" and part.image.detail not in ("", "auto"):
                return InvalidRequest(f"{path}.image.detail", "Bedrock takes no detail setting")
        for j, block in enumerate(message.reasoning):
            if block.text and not block.signature:
                return InvalidRequest(
                    f"messages[{i}].reasoning[{j}].signature",
                    "is required by Bedrock: reasoning from another provider cannot be sent "
                    "back to it",
                )
    marks = list(cache_marks(request))
    if len(marks) > MAX_CACHE_POINTS:
        return InvalidRequest(
            marks[MAX_CACHE_POINTS], f"Bedrock takes at most {MAX_CACHE_POINTS} cache points"
        )
    return None


def request_body(
    request: ChatCompletionRequest, model: str = "", default_max_tokens: int | None = None
) -> dict[str, Any]:
    refusal = request_refusal(request)
    if refusal is not None:
        raise refusal
    system, messages = messages_to_bedrock(request.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    thinking = thinking_of(request)
    if thinking is not None:
        if "anthropic" not in model and "claude" not in model:
            raise InvalidRequest(
                "reasoning",
                f"goes to Bedrock as Claude's thinking; {model!r} is not a Claude model",
            )
        body["additionalModelRequestFields"] = {"thinking": thinking}
    if request.HasField("max_tokens"):
        inference["maxTokens"] = request.max_tokens
    elif thinking is not None and "budget_tokens" in thinking:
        # Thinking counts toward maxTokens: the model's default is the answer's, budget beside.
        default = FALLBACK_MAX_TOKENS if default_max_tokens is None else default_max_tokens
        inference["maxTokens"] = default + thinking["budget_tokens"]
    if request.HasField("temperature"):
        inference["temperature"] = request.temperature
    if request.HasField("top_p"):
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = tool_config_of(request, messages)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    return body


def tool_config_of(
    request: ChatCompletionRequest, messages: list[dict[str, Any]]
) -> dict[str, Any] | None:
    if not request.tools:
        return None
    choice = tool_choice_of(request)
    holds_tools = any(
        "toolUse" in block or "toolResult" in block
        for message in messages
        for block in message["content"]
    )
    if choice == ("mode", "none") and not holds_tools:
        return None  # no tools offered: none can be called
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        function = tool.function
        spec: dict[str, Any] = {"name": function.name}
        if function.description:
            spec["description"] = function.description
        spec["inputSchema"] = {"json": function_parameters(function) or EMPTY_OBJECT_SCHEMA}
        tools.append({"toolSpec": spec})
        if tool.HasField("cache_control"):
            tools.append(cache_point(tool.cache_control))
    config: dict[str, Any] = {"tools": tools}
    if choice is not None and choice[0] == "function":
        config["toolChoice"] = {"tool": {"name": choice[1]}}
    elif choice is not None and choice[1] in _TOOL_CHOICES:
        config["toolChoice"] = _TOOL_CHOICES[choice[1]]
    return config


def cache_point(mark: CacheControl) -> dict[str, Any]:
    """A cache mark as a `cachePoint` block, after what it marks."""
    point: dict[str, Any] = {"type": "default"}
    if mark.ttl:
        point["ttl"] = mark.ttl
    return {"cachePoint": point}


def messages_to_bedrock(
    messages: Sequence[Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user/assistant messages of content blocks)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    documents = itertools.count(1)  # names for unnamed documents, unique in the request
    for message in messages:
        if message.role in SYSTEM_ROLES:
            system += text_blocks(message)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message, documents)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _marked(blocks: list[dict[str, Any]], holder: Message | ContentPart) -> list[dict[str, Any]]:
    if holder.HasField("cache_control"):
        blocks.append(cache_point(holder.cache_control))
    return blocks


def text_blocks(message: Message) -> list[dict[str, Any]]:
    """A system message's text: its content (with its cache point), then its text parts."""
    blocks: list[dict[str, Any]] = []
    if message.content or not message.parts:
        blocks += _marked([{"text": message.content}], message)
    for part in message.parts:
        blocks += _marked([{"text": part.text}], part)
    return blocks


def part_blocks(part: ContentPart, documents: Iterator[int]) -> list[dict[str, Any]]:
    """A content part as its content block (bytes base64 in JSON), then its cache point."""
    kind = part.WhichOneof("kind")
    block: dict[str, Any]
    if kind == "image":
        image = part.image
        source = {"bytes": b64(image.data)}
        block = {"image": {"format": _IMAGE_FORMATS[image.media_type], "source": source}}
    elif kind == "document":
        document = part.document
        name = _NAME_CHARACTERS.sub("-", document.name).strip() or f"document-{next(documents)}"
        block = {
            "document": {
                "format": _DOCUMENT_FORMATS[document.media_type],
                "name": " ".join(name.split())[:200],  # no two whitespace in a row
                "source": {"bytes": b64(document.data)},
            }
        }
    else:
        block = {"text": part.text}
    return _marked([block], part)


def reasoning_blocks(message: Message) -> list[dict[str, Any]]:
    """The message's reasoning, back first in its turn as it came, unmodified."""
    return [
        {"reasoningContent": {"redactedContent": block.redacted_data}}
        if block.redacted_data
        else {
            "reasoningContent": {
                "reasoningText": {"text": block.text, "signature": block.signature}
            }
        }
        for block in message.reasoning
    ]


def content_blocks(message: Message, documents: Iterator[int]) -> list[dict[str, Any]]:
    if message.role == "tool":
        text = message.content + "".join(
            p.text for p in message.parts if p.WhichOneof("kind") == "text"
        )
        result = {"toolUseId": message.tool_call_id, "content": [{"text": text}]}
        return _marked([{"toolResult": result}], message)
    blocks = reasoning_blocks(message)
    if message.content or (message.role != "assistant" and not message.parts):
        blocks += _marked([{"text": message.content}], message)
    for part in message.parts:
        blocks += part_blocks(part, documents)
    for call in message.tool_calls:
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call.id,
                    "name": call.function.name,
                    "input": arguments_object(call),
                }
            }
        )
    return blocks


# --- response: Converse JSON → proto ---------------------------------------------------


def finish_reason(stop_reason: Any) -> str:
    if stop_reason in FAILED_STOP_REASONS:
        raise UpstreamUnavailable(f"the model failed to answer (stopReason {stop_reason})")
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_into(usage: Usage, counts: dict[str, Any] | None) -> None:
    """Converse's counts; tokens read from or written to the prompt cache are prompt tokens."""
    if not counts:
        return
    usage.prompt_tokens = (
        int(counts.get("inputTokens") or 0)
        + int(counts.get("cacheReadInputTokens") or 0)
        + int(counts.get("cacheWriteInputTokens") or 0)
    )
    usage.completion_tokens = int(counts.get("outputTokens") or 0)
    usage.total_tokens = int(
        counts.get("totalTokens") or usage.prompt_tokens + usage.completion_tokens
    )
    usage.cached_tokens = int(counts.get("cacheReadInputTokens") or 0)
    usage.cache_write_tokens = int(counts.get("cacheWriteInputTokens") or 0)


def response_from_bedrock(payload: dict[str, Any], model: str) -> ChatCompletionResponse:
    response = ChatCompletionResponse(id=new_id("bedrock-"), model=model)
    choice = response.choices.add(index=0)
    choice.message.role = "assistant"
    for block in payload["output"]["message"]["content"]:
        if "text" in block:
            choice.message.content += block["text"]
        elif "toolUse" in block:
            use = block["toolUse"]
            call = ToolCall(id=use["toolUseId"], type="function")
            call.function.name = use["name"]
            call.function.arguments = arguments_text(use.get("input"))
            choice.message.tool_calls.append(call)
        elif "reasoningContent" in block:
            choice.message.reasoning.append(reasoning_block(block["reasoningContent"]))
        # citations and other blocks have no place in the service's message
    choice.finish_reason = finish_reason(payload.get("stopReason"))
    usage_into(response.usage, payload.get("usage"))
    return response


def reasoning_block(content: dict[str, Any]) -> ReasoningBlock:
    """A `reasoningContent` block: signed text, or redacted data (base64, kept as sent)."""
    if "redactedContent" in content:
        return ReasoningBlock(redacted_data=content["redactedContent"])
    text = content["reasoningText"]
    return ReasoningBlock(text=text["text"], signature=text.get("signature") or "")


class StreamTranslator:
    """ConverseStream frames → chunks; `metadata` (after `messageStop`) is the last one."""

    def __init__(self, provider: str, model: str, keep_reasoning: bool = True) -> None:
        self.provider = provider
        self.template = ChatCompletionChunk(id=new_id("bedrock-"), model=model)
        self.keep_reasoning = keep_reasoning
        self.finish: str | None = None
        self.done = False
        # content block index → [tool call index, whether any input arrived]
        self._tools: dict[int, list[int]] = {}
        # content block index → reasoning block index
        self._reasoning: dict[int, int] = {}

    def feed(self, frame: EventStreamMessage) -> list[ChatCompletionChunk]:
        headers = frame.headers
        kind = headers.get(":message-type")
        if kind == "exception":
            payload = _json_or_text(frame.payload)
            raise stream_exception(self.provider, str(headers.get(":exception-type")), payload)
        if kind == "error":
            raise UpstreamUnavailable(
                f"upstream {self.provider!r} failed mid-stream: "
                f"{headers.get(':error-code')}: {headers.get(':error-message')}"
            )
        event = str(headers.get(":event-type"))
        payload = parse_json_body(frame.payload, f"a {event} event")
        return translate_failure(self._event, payload, event)

    def _event(self, payload: dict[str, Any], event: str) -> list[ChatCompletionChunk]:
        if event == "messageStart":
            return [text_chunk(self.template, "", role="assistant")]
        if event == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if use is None:
                return []
            index = len(self._tools)
            self._tools[payload["contentBlockIndex"]] = [index, 0]
            return [self._tool_piece(index, "", use["toolUseId"], use["name"])]
        if event == "contentBlockDelta":
            delta = payload["delta"]
            if isinstance(delta.get("text"), str):
                return [text_chunk(self.template, delta["text"])]
            if "toolUse" in delta:
                tool = self._tools[payload["contentBlockIndex"]]
                piece = delta["toolUse"].get("input") or ""
                tool[1] = tool[1] or bool(piece)
                return [self._tool_piece(tool[0], piece)] if piece else []
            if "reasoningContent" in delta:
                return self._reasoning_piece(
                    payload["contentBlockIndex"], delta["reasoningContent"]
                )
            return []  # citations: not part of the service's message
        if event == "contentBlockStop":
            started = self._tools.get(payload["contentBlockIndex"])
            if started is not None and not started[1]:
                return [self._tool_piece(started[0], "{}")]  # as the unary answer's `input: {}`
            return []
        if event == "messageStop":
            self.finish = finish_reason(payload.get("stopReason"))
            return []
        if event == "metadata":
            if self.finish is None:
                raise ValueError("metadata before messageStop")
            self.done = True
            last = finish_chunk(self.template, self.finish, 0, 0)
            usage_into(last.usage, payload.get("usage"))
            return [last]
        return []  # event types added later

    def _reasoning_piece(self, block: int, delta: dict[str, Any]) -> list[ChatCompletionChunk]:
        index = self._reasoning.setdefault(block, len(self._reasoning))
        text = delta.get("text") or ""
        chunk = text_chunk(self.template, "")
        chunk.choices[0].delta.reasoning.add(
            index=index,
            text=text if self.keep_reasoning else "",
            signature=delta.get("signature") or "",
            redacted_data=delta.get("redactedContent") or "",
        )
        return [chunk]

    def last_chunk(self) -> ChatCompletionChunk:
        if self.finish is None:
            raise UpstreamUnavailable(
                f"upstream {self.provider!r} ended the stream without messageStop"
            )
        return finish_chunk(self.template, self.finish, 0, 0)

    def _tool_piece(
        self, index: int, arguments: str, call_id: str = "", name: str = ""
    ) -> ChatCompletionChunk:
        chunk = text_chunk(self.template, "")
        piece = chunk.choices[0].delta.tool_calls.add(
            index=index, id=call_id, type="function" if call_id else ""
        )
        piece.function.name = name
        piece.function.arguments = arguments
        return chunk


# --- errors ---------------------------------------------------------------------------------


def _json_or_text(payload: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {"message": payload.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"message": str(value)}


def _error(
    provider: str, name: str, status: int, payload: dict[str, Any], retry_after: str | None = None
) -> UpstreamError:
    # Bedrock's {"message"} (or "Message"); any other shape (a proxy's) as the others read it.
    message = payload.get("message") or payload.get("Message") or message_in_error_payload(payload)
    status = ERROR_STATUS.get(name.lower(), status)
    body = orjson.dumps({"message": str(message), "type": name or str(status)})
    return error_from_status(status, body, retry_after=retry_after, provider=provider)


def error_from_response(response: UpstreamResponse, body: bytes, provider: str) -> UpstreamError:
    """By the exception `x-amzn-ErrorType` names, else by status."""
    name = (response.header("x-amzn-errortype") or "").split(":")[0].split("#")[-1]
    error = _error(
        provider, name, response.status, _json_or_text(body), response.header("retry-after")
    )
    request_id = response.header("x-amzn-requestid")
    if request_id:
        error.metadata["upstream_request_id"] = request_id  # what AWS support asks for
    return error


def stream_exception(provider: str, name: str, payload: dict[str, Any]) -> UpstreamError:
    """An exception frame after the 200, classified as its HTTP status would be."""
    return _error(provider, name, 500, payload)
