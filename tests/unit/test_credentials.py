"""The refreshing token's rules, on a token source the test controls: one renewal for many
callers, renewal ahead of expiry while the current token still serves, a 401 dropping the
token, failures named and not retried at once, and a cancelled caller leaving the renewal
to the others."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from ai_service.errors import UpstreamUnavailable, scrub_secrets
from ai_service.providers.credentials import OutgoingRequest
from ai_service.providers.credentials.tokens import (
    RETRY_AFTER_FAILURE,
    CredentialError,
    RefreshingToken,
    Token,
)
from ai_service.providers.endpoint import bearer

REQUEST = OutgoingRequest("https://upstream.invalid/x", b"{}", {})


class Source:
    """Hands out `token-1`, `token-2`, … living `lifetime` seconds, or fails, when released."""

    describes = "the test token"

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.fetched = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: str | None = None
        self.asked: asyncio.Queue[int] = asyncio.Queue()  # each fetch, as it starts
        self.answered: asyncio.Queue[int] = asyncio.Queue()  # each fetch, as it returns

    async def fetch(self) -> Token:
        self.fetched += 1
        number = self.fetched
        self.asked.put_nowait(number)
        await self.gate.wait()
        self.answered.put_nowait(number)
        if self.failure is not None:
            raise CredentialError(self.failure)
        return Token(f"token-{number}-0123456789", self.lifetime)

    async def aclose(self) -> None:
        pass


async def test_many_callers_share_one_renewal() -> None:
    source = Source()
    source.gate.clear()
    token = RefreshingToken("p", source, bearer)
    callers = [asyncio.create_task(token.authorize(REQUEST)) for _ in range(50)]
    await source.asked.get()
    source.gate.set()
    headers = await asyncio.gather(*callers)
    assert source.fetched == 1
    assert {h["authorization"] for h in headers} == {"Bearer token-1-0123456789"}
    assert all(h is headers[0] for h in headers)  # one mapping per token


async def test_a_token_past_half_its_life_is_renewed_in_the_background() -> None:
    source = Source(lifetime=2.0)
    token = RefreshingToken("p", source, bearer)
    first = await token.authorize(REQUEST)
    await asyncio.sleep(1.1)  # past the renewal point (half its life), before the margin (1.5)
    source.gate.clear()
    assert await token.authorize(REQUEST) is first  # still served by the current token
    assert await source.asked.get() == 1
    assert await source.asked.get() == 2  # and one renewal started
    source.gate.set()
    await source.answered.get()
    assert await source.answered.get() == 2
    assert (await token.authorize(REQUEST))["authorization"] == "Bearer token-2-0123456789"
    assert source.fetched == 2


async def test_a_token_too_close_to_expiry_is_never_sent() -> None:
    source = Source(lifetime=0.2)
    token = RefreshingToken("p", source, bearer)
    await token.authorize(REQUEST)
    await asyncio.sleep(0.2 - 0.05)  # within the margin: a quarter of its life
    headers = await token.authorize(REQUEST)
    assert headers["authorization"] != "Bearer token-1-0123456789"


async def test_a_401_drops_the_token_it_was_sent_with_only() -> None:
    source = Source()
    token = RefreshingToken("p", source, bearer)
    old = await token.authorize(REQUEST)
    assert token.refused({"authorization": "Bearer someone-else's"})
    assert await token.authorize(REQUEST) is old  # another mapping: not the one refused
    assert token.refused(old)
    assert (await token.authorize(REQUEST))["authorization"] == "Bearer token-2-0123456789"


async def test_a_failed_renewal_names_its_cause_and_is_not_retried_at_once() -> None:
    source = Source()
    source.failure = "HTTP 503 from the token endpoint"
    token = RefreshingToken("azure", source, bearer)
    with pytest.raises(UpstreamUnavailable) as caught:
        await token.authorize(REQUEST)
    assert caught.value.message == (
        "upstream 'azure': the test token could not be obtained: HTTP 503 from the token endpoint"
    )
    with pytest.raises(UpstreamUnavailable):
        await token.authorize(REQUEST)
    assert source.fetched == 1  # the failure stands for RETRY_AFTER_FAILURE
    source.failure = None
    await asyncio.sleep(RETRY_AFTER_FAILURE)
    assert (await token.authorize(REQUEST))["authorization"] == "Bearer token-2-0123456789"


async def test_a_cancelled_caller_leaves_the_renewal_to_the_others() -> None:
    source = Source()
    source.gate.clear()
    token = RefreshingToken("p", source, bearer)
    first = asyncio.create_task(token.authorize(REQUEST))
    second = asyncio.create_task(token.authorize(REQUEST))
    await source.asked.get()
    first.cancel()
    source.gate.set()
    assert (await second)["authorization"] == "Bearer token-1-0123456789"
    assert source.fetched == 1


class DistinctSource(Source):
    """Tokens that share no run of characters: each is scrubbed on its own."""

    async def fetch(self) -> Token:
        await super().fetch()
        return Token(secrets.token_urlsafe(24), self.lifetime)


async def test_tokens_are_scrubbed_and_a_replaced_one_is_forgotten() -> None:
    token = RefreshingToken("p", DistinctSource(), bearer)
    first = (await token.authorize(REQUEST))["authorization"].removeprefix("Bearer ")
    assert scrub_secrets(f"echo {first}") == "echo ***"
    assert token.refused(await token.authorize(REQUEST))
    second = (await token.authorize(REQUEST))["authorization"].removeprefix("Bearer ")
    assert scrub_secrets(f"echo {second}") == "echo ***"
    assert scrub_secrets(f"echo {first}") == f"echo {first}"
