"""The facts a call record gives its observers, and the headers a call sends upstream."""

from __future__ import annotations

import pytest

from ai_service.calls.record import CallRecord
from ai_service.observability.conventions import operation_name, provider_name
from ai_service.providers.http.propagation import forwarded_headers

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_request_id_and_a_well_formed_caller_trace_go_upstream() -> None:
    metadata = [("traceparent", TRACEPARENT), ("tracestate", "a=1,b=2"), ("x-other", "no")]
    assert forwarded_headers("req-1", metadata) == {
        "x-request-id": "req-1",
        "traceparent": TRACEPARENT,
        "tracestate": "a=1,b=2",
    }


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-nonsense",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # no trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # no span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        TRACEPARENT + "\r\nx-injected: 1",
    ],
)
def test_a_malformed_caller_trace_is_dropped_with_its_tracestate(traceparent: str) -> None:
    metadata = [("traceparent", traceparent), ("tracestate", "a=1")]
    assert forwarded_headers("req-1", metadata) == {"x-request-id": "req-1"}


def test_a_tracestate_too_long_or_with_a_line_break_is_dropped() -> None:
    for tracestate in ("a=" + "x" * 600, "a=1\nb=2"):
        metadata = [("traceparent", TRACEPARENT), ("tracestate", tracestate)]
        assert "tracestate" not in forwarded_headers("req-1", metadata)


def test_overhead_leaves_out_upstream_time_backoff_and_slot_waits() -> None:
    call = CallRecord((), "id", "ChatCompletion", streaming=False, started=10.0)
    call.ended = 12.0
    call.backoff_seconds, call.queued_seconds = 1.0, 0.25
    assert call.overhead_seconds == pytest.approx(0.75)
    call.backoff_seconds = 3.0  # hedged attempts may overlap: never negative
    assert call.overhead_seconds == 0.0


def test_a_stream_cut_before_its_usage_estimates_the_tokens_it_delivered() -> None:
    call = CallRecord((), "id", "StreamChatCompletion", streaming=True)
    assert call.output_tokens() == (0, False)
    call.chunks_delivered, call.chars_delivered = 3, 9
    assert call.output_tokens() == (3, True)  # 9 characters, 4 to a token, rounded up
    assert call.deployment is None and call.model_served == ""


def test_genai_names() -> None:
    assert [operation_name(m) for m in ("ChatCompletion", "StreamChatCompletion", "Embed")] == [
        "chat",
        "chat",
        "embeddings",
    ]
    assert provider_name("openai") == "openai" and provider_name("bedrock") == "aws.bedrock"
    assert provider_name("azure_openai") == "azure.ai.openai"
