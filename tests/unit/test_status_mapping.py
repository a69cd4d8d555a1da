"""Upstream HTTP error answers → the gateway's errors (the table in docs/errors.md), the
upstream's message as the caller sees it, and Retry-After."""

from __future__ import annotations

import email.utils
import time

import grpc
import pytest

from ai_service.errors import (
    UpstreamAuth,
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    keep_secret,
)
from ai_service.providers.status_mapping import (
    caller_message,
    error_from_status,
    parse_retry_after,
    upstream_message,
)

OPENAI_ERROR = b'{"error": {"message": "bad model", "type": "invalid_request_error"}}'
SECRET = "zq7-status-secret-Hk29fLmw0aPx"


def mapped(
    status: int, body: bytes = OPENAI_ERROR, retry_after: str | None = None
) -> UpstreamError:
    return error_from_status(status, body, retry_after=retry_after, provider="p")


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (413, UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (422, UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (409, UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (499, UpstreamInvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
        (404, UpstreamNotFound, grpc.StatusCode.NOT_FOUND),
        (408, UpstreamTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
        (429, UpstreamRateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
        (503, UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
        (529, UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
        (302, UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
        (399, UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_status_maps_to_its_error_with_the_upstream_s_message(
    status: int, kind: type[UpstreamError], code: grpc.StatusCode
) -> None:
    error = mapped(status)
    assert type(error) is kind and error.code is code
    assert error.message == (
        f"upstream 'p' answered HTTP {status}: bad model (invalid_request_error)"
    )


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_the_gateway_s_problem_and_names_no_detail(status: int) -> None:
    error = mapped(status)
    assert type(error) is UpstreamAuth and error.code is grpc.StatusCode.INTERNAL
    assert error.message == f"upstream 'p' refused the gateway's credentials ({status})"


def test_a_refused_account_is_the_gateway_s_problem_with_the_upstream_s_reason() -> None:
    error = mapped(402, b'{"type": "error", "error": {"type": "billing_error", "message": "pay"}}')
    assert type(error) is UpstreamAuth
    assert error.message == "upstream 'p' refused the gateway's account: pay (billing_error)"


def test_a_429_carries_its_retry_after() -> None:
    error = mapped(429, retry_after="7")
    assert isinstance(error, UpstreamRateLimited) and error.retry_after == 7.0
    assert mapped(429).retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (OPENAI_ERROR, "bad model (invalid_request_error)"),
        (
            b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}',
            "slow down (rate_limit_exceeded)",
        ),
        (b'{"error": {"message": "plain"}}', "plain"),
        (b'{"error": {"message": "typed", "type": 7}}', "typed"),
        (
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "Overloaded (overloaded_error)",
        ),
        (b'{"error": "model \\"x\\" not found"}', 'model "x" not found'),
        (b'{"message": "top level", "type": "t"}', "top level (t)"),
        (b'{"error": {"message": 5}}', '{"error":{"message":5}}'),
        (b'{"detail": "other"}', '{"detail":"other"}'),
        (b"[1, 2]", "[1,2]"),
        (b"  Bad Gateway \n", "Bad Gateway"),
        (b"", "(empty body)"),
        (b"   ", "(empty body)"),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_the_upstream_s_message_in_every_provider_s_shape(body: bytes, message: str) -> None:
    assert upstream_message(body) == message


def test_the_caller_s_message_loses_every_provider_key_and_then_its_length() -> None:
    keep_secret(SECRET)
    assert SECRET not in caller_message(f"your key {SECRET} is wrong")
    exact = "x" * 512  # the documented cut (docs/errors.md)
    assert caller_message(exact) == exact
    assert caller_message(exact + "y") == exact + "…"
    # Scrubbed before it is cut: a key across the cut leaves no prefix behind.
    text = "x" * (512 - 10) + SECRET
    assert SECRET[:10] not in caller_message(text)
    error = mapped(400, f'{{"error": {{"message": "key {SECRET}"}}}}'.encode())
    assert SECRET not in error.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("inf", None),
        ("nan", None),
        ("soon", None),
    ],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    before = time.time()
    when = before + 120
    value = email.utils.formatdate(when, usegmt=True)
    seconds = parse_retry_after(value)
    after = time.time()
    assert seconds is not None
    whole = int(when)  # an HTTP date has whole seconds
    assert whole - after <= seconds <= whole - before
    assert parse_retry_after(email.utils.formatdate(before - 60, usegmt=True)) == 0.0


def test_retry_after_as_an_asctime_date_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+5:30: a local reading would be off
    time.tzset()
    try:
        before = time.time()
        when = before + 600
        asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(when))  # names no zone
        seconds = parse_retry_after(asctime)
        after = time.time()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert seconds is not None
    assert int(when) - after <= seconds <= int(when) - before
