"""A typed Python client for the ai-service gateway, async and sync.

    async with AsyncAIClient("127.0.0.1:50051", api_key="...") as client:
        print(await client.ask("Hello!", model="gpt-4o-mini"))

    with AIClient("127.0.0.1:50051", api_key="...") as client:
        for chunk in client.stream_chat(build_chat_request("Hi", model="gpt-4o-mini")):
            print(chunk.choices[0].delta.content, end="", flush=True)

Failed calls raise `AIServiceError`, which carries the status code and the decoded
rich details (retry delay, field violations, quota, reason). The proto messages are
re-exported here, so `protos` need not be imported.
"""

from __future__ import annotations

from ai_service_client._async import AsyncAIClient, AsyncChatStream
from ai_service_client._errors import AIServiceError
from ai_service_client._requests import DEFAULT, answer_text, build_chat_request
from ai_service_client._sync import AIClient, ChatStream
from ai_service_client._tls import TLSOptions
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionDefinition,
    ListModelsResponse,
    Message,
    Model,
    RequestOptions,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)

__all__ = [
    "DEFAULT",
    "AIClient",
    "AIServiceError",
    "AsyncAIClient",
    "AsyncChatStream",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatStream",
    "Choice",
    "ChunkChoice",
    "Delta",
    "FunctionCall",
    "FunctionDefinition",
    "ListModelsResponse",
    "Message",
    "Model",
    "RequestOptions",
    "ResponseFormat",
    "TLSOptions",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "answer_text",
    "build_chat_request",
]
