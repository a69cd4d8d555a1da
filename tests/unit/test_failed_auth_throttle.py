"""The failed-authentication throttle: whom it tells apart, and that it stays small."""

from __future__ import annotations

import pytest

from ai_service.errors import AuthThrottled, Unauthenticated
from ai_service.identity.throttle import MAX_ADDRESSES, FailedAuthThrottle, client_address
from ai_service.limits.rules import RateRule


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:50000", "10.1.2.3"),
        ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
        ("ipv6:[::1]:9", "::/64"),
        ("unix:/run/ai.sock", "unix:/run/ai.sock"),
        ("ipv4:not-an-address:1", "ipv4:not-an-address:1"),
    ],
)
def test_a_client_is_its_address_or_its_ipv6_64(peer: str, address: str) -> None:
    assert client_address(peer) == address


async def test_addresses_past_the_limit_share_one_bucket() -> None:
    throttle = FailedAuthThrottle(RateRule(per_minute=1, burst=1))
    error = Unauthenticated("invalid API key")
    for n in range(MAX_ADDRESSES):
        assert (
            await throttle.judge(f"ipv4:10.{n >> 16}.{(n >> 8) & 255}.{n & 255}:1", error) is error
        )
    # Two new addresses: the first spends the shared bucket, the second finds it empty.
    assert await throttle.judge("ipv4:192.0.2.1:1", error) is error
    assert isinstance(await throttle.judge("ipv4:192.0.2.2:1", error), AuthThrottled)
    assert len(throttle._addresses) == MAX_ADDRESSES
