"""`Retry-After` in either form RFC 9110 allows — delta-seconds or an HTTP date — is
honoured: it paces the gateway's own retry and reaches the caller as RetryInfo."""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Iterator

import aiohttp
import grpc
import pytest

from ai_service.providers.status_mapping import parse_retry_after
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
#: google.protobuf.Duration's largest value, in seconds (10,000 years).
MAX_DURATION_SECONDS = 315_576_000_000


@pytest.fixture
def local_time_not_utc() -> Iterator[None]:
    """Local time five hours behind UTC: a date read as local time would be off by that."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "EST5"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def imf_fixdate(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)  # Sun, 06 Nov 1994 08:49:37 GMT


def rfc850_date(at: float) -> str:
    return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(at))


def asctime_date(at: float) -> str:
    return time.asctime(time.gmtime(at))  # Sun Nov  6 08:49:37 1994, in UTC by definition


@pytest.mark.parametrize("form", [imf_fixdate, rfc850_date, asctime_date])
@pytest.mark.usefixtures("local_time_not_utc")
def test_an_http_date_in_each_rfc_9110_form_is_seconds_from_now(
    form: Callable[[float], str],
) -> None:
    """Guards: `parse_retry_after` reading only delta-seconds (the HTTP-date branch
    dropped), and reading a date without a zone (asctime) as local time, which put a
    Retry-After hours off on a host not on UTC."""
    at = int(time.time()) + 120
    seconds = parse_retry_after(form(at))
    assert seconds is not None
    assert 115 < seconds <= 120


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        (imf_fixdate(time.time() - 3600), 0.0),  # a date gone by: retry now
        ("", None),
        ("soon", None),
        ("inf", None),  # float() takes these; no upstream means them
        ("nan", None),
    ],
    ids=["seconds", "zero", "past-date", "empty", "word", "inf", "nan"],
)
def test_retry_after_values(value: str, seconds: float | None) -> None:
    """Guards: a Retry-After that is no number of seconds (`inf`, `nan`) taken as one,
    which later failed building the caller's RetryInfo."""
    assert parse_retry_after(value) == seconds


async def test_a_retry_after_date_beyond_the_deadline_reaches_the_caller_as_retry_info(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards, end to end: a Retry-After HTTP date ignored (`parse_retry_after`
    returning None for it): the caller got no RetryInfo, and the gateway retried at
    once instead of saying when to come back."""
    gateway = await start_gateway()
    simulator.add_fault(FaultRule("status", status=429, retry_after=70, retry_after_date=True))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert simulator.stats.total_requests == 1  # 70 s does not fit in the deadline: no wait
    error = caught.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "UPSTREAM_RATE_LIMITED"
    assert error.retry_after is not None and 65 < error.retry_after <= 71


async def test_a_retry_after_date_within_the_deadline_is_waited_out(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: the gateway's retry after a 429 not waiting for the HTTP date it was
    given (the date ignored, so the retry came after a few milliseconds' backoff)."""
    gateway = await start_gateway()
    simulator.add_fault(
        FaultRule("status", status=429, retry_after=1, retry_after_date=True, times=1)
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        answer = await client.chat(HELLO)
    assert answer.choices[0].message.content == "You said: hello"
    refused, served = simulator.stats.received
    # The date has whole seconds and is rounded up: at least the second asked for,
    # less the trip the 429 took back to the gateway.
    assert served.time - refused.time > 0.9


async def test_a_retry_after_too_long_for_retry_info_still_reaches_the_caller(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: a Retry-After larger than a protobuf Duration can hold (valid HTTP: any
    number of digits) failing the call UNKNOWN while building RetryInfo, instead of
    RESOURCE_EXHAUSTED with the longest delay RetryInfo can carry."""
    gateway = await start_gateway()
    simulator.add_fault(FaultRule("status", status=429, retry_after=1e30))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "UPSTREAM_RATE_LIMITED"
    assert caught.value.retry_after == MAX_DURATION_SECONDS


async def test_the_simulator_sends_retry_after_as_an_http_date(simulator: Simulator) -> None:
    """The fault option the tests above rely on: an RFC 9110 IMF-fixdate header."""
    simulator.add_fault(FaultRule("status", status=429, retry_after=30, retry_after_date=True))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{simulator.base_url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        ) as response,
    ):
        header = response.headers["retry-after"]
    assert response.status == 429
    assert header.endswith(" GMT")
    when = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
    assert 28 < when <= 31
