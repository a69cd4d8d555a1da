"""A typed Python client for the ai-service gateway, async and sync.

    with AIClient("127.0.0.1:50051", api_key="...") as ai:
        response = ai.chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": "Hello!"}]
        )
        print(response.choices[0].message.content)

    async with AsyncAIClient("127.0.0.1:50051", api_key="...") as ai:
        stream = await ai.chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        async for chunk in stream:
            print(chunk.choices[0].delta.content, end="", flush=True)

Beside that OpenAI-style face, `chat(request)`, `stream_chat(request)`, `ask(prompt)`
and `list_models()` take and return the proto messages directly.

Failed calls raise `AIServiceError`, which carries the status code and the decoded
rich details (retry delay, field violations, quota, reason), as the subclass for its
status (`RateLimitError`, `BadRequestError`, `StreamInterruptedError`, ...). The proto
messages are re-exported here, so `protos` need not be imported.
"""

from __future__ import annotations

from ai_service_client._async import AsyncAIClient, AsyncChatStream
from ai_service_client._errors import (
    AIServiceError,
    AuthenticationError,
    BadRequestError,
    CallCancelledError,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamInterruptedError,
    UnavailableError,
)
from ai_service_client._params import ChatParams, MessageParam
from ai_service_client._requests import DEFAULT, answer_text, build_chat_request
from ai_service_client._sync import AIClient, ChatStream
from ai_service_client._tls import TLSOptions
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    BudgetStatus,
    CacheControl,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    ContentPart,
    Cost,
    Delta,
    DocumentPart,
    Embedding,
    EmbedRequest,
    EmbedResponse,
    FunctionCall,
    FunctionDefinition,
    GetUsageRequest,
    GetUsageResponse,
    ImagePart,
    ListModelsResponse,
    Message,
    Model,
    ModelCapabilities,
    ReasoningBlock,
    ReasoningConfig,
    ReasoningDelta,
    RequestOptions,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageRow,
)

__all__ = [
    "DEFAULT",
    "AIClient",
    "AIServiceError",
    "AsyncAIClient",
    "AsyncChatStream",
    "AudioPart",
    "AuthenticationError",
    "BadRequestError",
    "BudgetStatus",
    "CacheControl",
    "CallCancelledError",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatParams",
    "ChatStream",
    "Choice",
    "ChunkChoice",
    "ContentPart",
    "Cost",
    "DeadlineExceededError",
    "Delta",
    "DocumentPart",
    "EmbedRequest",
    "EmbedResponse",
    "Embedding",
    "FunctionCall",
    "FunctionDefinition",
    "GetUsageRequest",
    "GetUsageResponse",
    "ImagePart",
    "InternalError",
    "ListModelsResponse",
    "Message",
    "MessageParam",
    "Model",
    "ModelCapabilities",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReasoningBlock",
    "ReasoningConfig",
    "ReasoningDelta",
    "RequestOptions",
    "ResponseFormat",
    "StreamInterruptedError",
    "TLSOptions",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "UnavailableError",
    "Usage",
    "UsageRow",
    "answer_text",
    "build_chat_request",
]
