"""The OpenTelemetry conventions the metrics and the spans share: GenAI operation and
provider names, which gRPC codes are the server's failures, and an attempt's error type.
"""

from __future__ import annotations

import grpc

from ai_service.calls.record import AttemptRecord

#: `gen_ai.operation.name` of each AIService method that reaches an upstream.
_OPERATIONS = {"ChatCompletion": "chat", "StreamChatCompletion": "chat", "Embed": "embeddings"}

#: `gen_ai.provider.name` where the conventions name a provider kind otherwise (the
#: clouds' kinds); any other kind is its own name (`openai`, `anthropic`, `ollama`).
_PROVIDER_NAMES = {
    "azure_openai": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
}

#: The codes the RPC conventions count as the server's failure: only these mark a
#: server span ERROR. The rest (a bad request, no key, an unknown model, a limit)
#: are the caller's, and leave the span's status unset.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def operation_name(method: str) -> str:
    return _OPERATIONS.get(method, "chat")


def provider_name(kind: str) -> str:
    return _PROVIDER_NAMES.get(kind, kind)


def attempt_error_type(attempt: AttemptRecord) -> str:
    """A failed attempt's `error.type`: the upstream's HTTP status when it answered with
    an error one (500 and 503 are told apart), else the gateway's reason for the
    failure (UPSTREAM_TIMEOUT, a connection's UPSTREAM_UNAVAILABLE, CANCELLED)."""
    status = attempt.http_status
    if status is not None and status >= 400:
        return str(status)
    return attempt.error or ""
