"""Every configured secret, and scrubbing it out of text that leaves the gateway.

A secret is registered once, where the config hands it over (`keep_secret`: one line
per source — provider header values in server/providers/endpoint.py, provider keys,
client secrets, AWS keys and every access token in server/providers/credentials/; a
renewed token's predecessor is `forget_secret`-ed); from then on every status, log
line, audit record, span attribute and answer is passed through `scrub_secrets`. An
upstream that echoes a secret rarely echoes it byte for byte, so each is known in
several forms: as written, URL-encoded, in base64 (standard and URL-safe, at each of
the three alignments it can take inside a longer encoded text, as in a Basic
`user:key`), and all of them in any letter case. A run of at least half of any form (and
`MIN_SECRET_CHARS`) is scrubbed too: a key cut short, or its tail, shows no more
than half of it, whichever way it was cut.

Matching is plain substring search on a lower-cased copy (C speed, no regex): each
form is found through a few short anchors, and each hit is grown both ways as far as
it agrees with the form.
"""

from __future__ import annotations

import base64
import math
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

#: Shorter "secrets" are placeholders (`EMPTY` for vLLM, `ollama`), not credentials:
#: hiding them would garble every message that names, say, the provider `ollama`.
MIN_SECRET_CHARS = 8
MASK = "***"
_SHORT_RUN = 4


@dataclass(frozen=True, slots=True)
class _Anchor:
    text: str
    #: The whole form (lower case) and where the anchor sits in it.
    form: str
    offset: int
    #: The shortest run of the form that is scrubbed.
    least: int


class SecretRegistry:
    """The secrets of this process. Registered on the event loop, read from any thread
    (the audit writer): readers take the anchors as one immutable tuple."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._anchors: tuple[_Anchor, ...] = ()
        #: Every run of a form up to `_SHORT_RUN` long: most streamed chunks end in
        #: one, and a set answers at once (`partial_tail`).
        self._short_runs: frozenset[str] = frozenset()
        self._longest = 0
        #: The shortest run of any form that is scrubbed: a shorter text holds none.
        self._least = 0
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            return
        with self._lock:
            anchors = list(self._anchors)
            short = set(self._short_runs)
            for form in _forms(secret):
                if len(form) >= MIN_SECRET_CHARS and form not in self._forms:
                    self._forms.add(form)
                    anchors += _anchors(form)
                    short.update(_runs(form))
                    self._longest = max(self._longest, len(form))
            self._short_runs = frozenset(short)
            self._least = min(anchor.least for anchor in anchors) if anchors else 0
            self._anchors = tuple(anchors)

    def remove(self, secret: str) -> None:
        """Forget `secret`'s forms: an access token replaced by its renewal, which nothing
        sends any more (every scrub checks every form, so renewals must not pile up)."""
        with self._lock:
            gone = {form for form in _forms(secret)} & self._forms
            if not gone:
                return
            self._forms -= gone
            anchors = tuple(anchor for anchor in self._anchors if anchor.form not in gone)
            self._short_runs = frozenset(run for form in self._forms for run in _runs(form))
            self._longest = max((len(form) for form in self._forms), default=0)
            self._least = min(anchor.least for anchor in anchors) if anchors else 0
            self._anchors = anchors

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where `text` holds a secret, in any of its forms: sorted, merged spans."""
        anchors = self._anchors
        if not anchors or len(text) < self._least:
            return []
        low = _lower(text)
        found = []
        for anchor in anchors:
            at = low.find(anchor.text)
            while at != -1:
                span = _grown(low, at, anchor)
                if span is not None:
                    found.append(span)
                at = low.find(anchor.text, at + 1)
        return _merged(found)

    def scrub(self, text: str) -> str:
        spans = self.spans(text)
        return masked(text, spans) if spans else text

    def partial_tail(self, text: str) -> int:
        """How many characters at the end of `text` could be the start of a secret
        (a run of a form) that continues in text not yet seen: a stream holds them back."""
        short = self._short_runs
        if not short or not text:
            return 0
        low = text[-_SHORT_RUN:].lower()  # most texts end in no more than this
        kept = 0
        while kept < len(low) and low[len(low) - kept - 1 :] in short:
            kept += 1
        if kept < _SHORT_RUN:
            return kept
        low = _lower(text[-self._longest :])
        forms = tuple(self._forms)
        while kept < len(low) and any(low[len(low) - kept - 1 :] in form for form in forms):
            kept += 1
        return kept


def masked(text: str, spans: list[tuple[int, int]]) -> str:
    pieces: list[str] = []
    at = 0
    for start, end in spans:
        pieces += (text[at:start], MASK)
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


def _forms(secret: str) -> Iterator[str]:
    yield secret.lower()
    yield urllib.parse.quote(secret, safe="").lower()
    yield urllib.parse.quote_plus(secret).lower()
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            # `shift` bytes before the secret: the groups of 3 bytes wholly inside it
            # encode the same whatever surrounds it.
            encoded = encode(b"\0" * shift + raw).decode()
            first = 4 if shift else 0
            last = 4 * ((shift + len(raw)) // 3)
            yield encoded[first:last].lower()


def _runs(form: str) -> Iterator[str]:
    """Every run of `form` up to `_SHORT_RUN` long."""
    return (
        form[at : at + size]
        for size in range(1, _SHORT_RUN + 1)
        for at in range(len(form) - size + 1)
    )


def _anchors(form: str) -> list[_Anchor]:
    """Anchors such that every run of `form` at least `least` long holds one whole."""
    least = max(MIN_SECRET_CHARS, math.ceil(len(form) / 2))
    size = math.ceil(least / 2)
    step = least - size + 1
    return [
        _Anchor(form[at : at + size], form, at, least)
        for at in range(0, len(form) - size + 1, step)
    ]


def _grown(low: str, at: int, anchor: _Anchor) -> tuple[int, int] | None:
    """The run of the form around an anchor found at `at`, if it is long enough."""
    form, offset = anchor.form, anchor.offset
    start, into = at, offset
    while start > 0 and into > 0 and low[start - 1] == form[into - 1]:
        start -= 1
        into -= 1
    end, upto = at + len(anchor.text), offset + len(anchor.text)
    while end < len(low) and upto < len(form) and low[end] == form[upto]:
        end += 1
        upto += 1
    return (start, end) if end - start >= anchor.least else None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


def _lower(text: str) -> str:
    """`text` in lower case, character for character (offsets must stay put)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


#: The process's one registry.
SECRETS = SecretRegistry()


def keep_secret(secret: str) -> None:
    """Never let `secret`, in any of its forms, leave the gateway."""
    SECRETS.add(secret)


def forget_secret(secret: str) -> None:
    """Stop scrubbing `secret` (a rotated access token, never sent again)."""
    SECRETS.remove(secret)


def scrub_secrets(text: str) -> str:
    return SECRETS.scrub(text)
