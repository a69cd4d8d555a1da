"""Configured caller keys: which key a call presents, and whose it is."""

from __future__ import annotations

import hashlib

import pytest

from ai_service.config import AuthSettings, RateLimitSettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Grantor
from ai_service.identity.keyring import KeyRing, digest_of, has_credentials, presented_key

KEY = "key-0123456789abcdef"
OTHER = "other-0123456789abcdef"


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", f"Bearer {KEY}")],
        [("authorization", f"bearer   {KEY}  ")],
        [("authorization", f"  BEARER {KEY}")],
        [("x-api-key", KEY)],
        [("x-api-key", f"  {KEY} ")],
        # The same key twice is one key.
        [("authorization", f"Bearer {KEY}"), ("x-api-key", KEY)],
        # Other headers, and binary ones even under a credential's name, are not keys.
        [("accept", "x"), ("user-agent", "x"), ("x-request-id", "y"), ("x-api-key", KEY)],
        [("authorization-bin", b"x"), ("x-api-key", KEY)],
        [("authorization", b"Bearer other"), ("x-api-key", KEY)],
        [("x-api-key", b""), ("authorization", f"Bearer {KEY}")],
    ],
)
def test_the_key_a_call_presents(metadata: list[tuple[str, str | bytes]]) -> None:
    assert presented_key(metadata) == KEY


def test_header_names_are_compared_by_value() -> None:
    # Names arrive from the wire as new strings, never the interned literals.
    authorization, api_key = "".join(["author", "ization"]), "".join(["x-api", "-key"])
    assert presented_key([(authorization, f"Bearer {KEY}")]) == KEY
    assert presented_key([(api_key, KEY)]) == KEY


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([], "missing credentials"),
        ([("user-agent", "x")], "missing credentials"),
        ([("authorization", b"Bearer k")], "missing credentials"),
        ([("authorization", f"Basic {KEY}")], "must be 'Bearer <key>'"),
        ([("authorization", KEY)], "must be 'Bearer <key>'"),
        ([("authorization", "Bearer ")], "must be 'Bearer <key>'"),
        ([("authorization", "Bearer    ")], "must be 'Bearer <key>'"),
        ([("x-api-key", "")], "x-api-key metadata is empty"),
        ([("x-api-key", "   ")], "x-api-key metadata is empty"),
        ([("authorization", f"Bearer {KEY}"), ("x-api-key", OTHER)], "conflicting credentials"),
        ([("x-api-key", KEY), ("x-api-key", OTHER)], "conflicting credentials"),
        # A malformed one is refused even beside a good one.
        ([("x-api-key", KEY), ("authorization", "Token x")], "must be 'Bearer <key>'"),
    ],
)
def test_what_is_wrong_with_the_credentials_is_said(
    metadata: list[tuple[str, str | bytes]], message: str
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        presented_key(metadata)
    assert message in refused.value.message
    assert KEY not in refused.value.message and OTHER not in refused.value.message


@pytest.mark.parametrize(
    ("metadata", "presents"),
    [
        ([], False),
        ([("user-agent", "x"), ("authorization-bin", b"x")], False),
        ([("authorization", "")], True),
        ([("x-api-key", "anything")], True),
        ([("user-agent", "x"), ("authorization", "Basic x")], True),
    ],
)
def test_whether_a_call_presents_credentials(
    metadata: list[tuple[str, str | bytes]], presents: bool
) -> None:
    assert has_credentials(metadata) is presents


def test_a_key_is_known_by_its_sha256_digest() -> None:
    assert digest_of(KEY) == hashlib.sha256(KEY.encode()).digest()


def test_configured_keys_find_their_callers_by_digest() -> None:
    settings = AuthSettings.model_validate(
        {
            "keys": [
                {"name": "plain", "key": KEY, "models": ["m"]},
                {
                    "name": "hashed",
                    "key_sha256": "sha256:" + hashlib.sha256(OTHER.encode()).hexdigest(),
                },
            ]
        }
    )
    ring = KeyRing(settings, Grantor((), RateLimitSettings()))
    plain = ring.find(digest_of(KEY))
    hashed = ring.find(digest_of(OTHER))
    assert plain is not None and hashed is not None
    assert (plain.name, plain.source, plain.models) == ("plain", "config_key", frozenset({"m"}))
    assert hashed.name == "hashed"
    assert ring.find(digest_of("unknown-0123456789")) is None
    assert ring.find(KEY.encode()) is None
