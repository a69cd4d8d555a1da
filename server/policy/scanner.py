"""Finding the configured detectors' entities in a text, a bounded slice at a time.

The detectors are combined into one pattern and run over the text's folded copy
(`normalize.py`); each finding is mapped back to the span of the original text. A
regular expression holds the GIL and the event loop for as long as one search runs,
and a search over a long text with nothing in it runs to its end: 0.3-0.85 µs per
character, a third of a second for a 1 MiB prompt. So a search never looks at more
than `SCAN_SLICE` characters: every match is bounded (`Detector.longest`), and a
match is taken only where the slice holds everything a match there could span, so
slices that overlap by that much find exactly what one search of the whole text
would. `find_steps` yields between slices; `find_async` lets the event loop serve
other calls there, `find` runs them all at once (short texts, threads).

Long texts are scanned one at a time per event loop (first come, first served), each
slice followed by a turn of the loop: with six long scans interleaved, every turn of
the loop would run six slices, and a small call, which needs a dozen turns, would
wait for all of them at each (bench/RESULTS.md, "Redaction stall"). Short texts are
scanned at once, in no queue.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from ai_service.policy.detectors import MAX_ENTITY_CHARS, Detector
from ai_service.policy.normalize import folded_steps

#: Characters one search may look at: ~1-3 ms of the loop's time, whatever the text.
SCAN_SLICE = 4096
#: Past a match's last character, what a lookahead may still look at.
_LOOKAHEAD_CHARS = 8
#: A failed candidate is taken apart only if it is this short (cards, phones, IBANs
#: are), and at most this many times per text: the scan stays linear on any input.
_MAX_RESCAN_CHARS = 48
_MAX_RESCANS = 64


_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _lane() -> asyncio.Lock:
    """The running loop's one lane for long scans (a lock belongs to one loop)."""
    loop = asyncio.get_running_loop()
    lane = _LANES.get(loop)
    if lane is None:
        lane = _LANES[loop] = asyncio.Lock()
    return lane


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


class Redactor:
    """The configured detectors, scanned in one pass where they can be combined."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = {f"d{i}": detector for i, detector in enumerate(detectors)}
        self._pattern = re.compile(
            "|".join(f"(?P<{group}>{d.pattern})" for group, d in self._detectors.items())
            or "(?!)"  # no detectors: a pattern that matches nothing (an empty one matches "")
        )
        # Each alone, in the same order: for where the combined scan's first candidate
        # fails its check but another kind starts at the same place.
        self._each = [(re.compile(d.pattern), d) for d in self._detectors.values()]
        self._tails = {group: re.compile(d.tail) for group, d in self._detectors.items() if d.tail}
        #: The farthest a match (and its lookahead) reaches from where it starts.
        self.reach = (
            max(
                (min(d.longest or MAX_ENTITY_CHARS, MAX_ENTITY_CHARS) for d in detectors),
                default=0,
            )
            + _LOOKAHEAD_CHARS
        )

    def find(self, text: str) -> list[Finding]:
        """Every finding in `text`, at once."""
        steps = self.find_steps(text)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                findings: list[Finding] = done.value
                return findings

    async def find_async(self, text: str) -> list[Finding]:
        """Every finding in `text`, letting the event loop run between slices."""
        if len(text) <= SCAN_SLICE:
            return self.find(text)
        async with _lane():
            steps = self.find_steps(text)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    findings: list[Finding] = done.value
                    return findings
                await asyncio.sleep(0)

    async def find_each(self, texts: Sequence[str]) -> list[list[Finding]]:
        """Every finding in each of `texts`, letting the event loop run between slices of
        the work (many short texts count as one long one)."""
        if sum(map(len, texts)) <= SCAN_SLICE:
            return [self.find(text) for text in texts]
        async with _lane():
            results = []
            spent = 0
            for text in texts:
                steps = self.find_steps(text)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        results.append(done.value)
                        break
                    await asyncio.sleep(0)
                spent += len(text)
                if spent >= SCAN_SLICE:
                    spent = 0
                    await asyncio.sleep(0)
            return results

    def find_steps(self, original: str) -> Generator[None, None, list[Finding]]:
        """Every finding in `original`; yields between slices of the work."""
        folded = yield from folded_steps(original)
        text = folded.text
        findings = []
        rescans = _MAX_RESCANS
        at = 0
        spent = 0
        size = len(text)
        while at < size:
            end = min(size, at + SCAN_SLICE)
            match = self._pattern.search(text, at, end)
            spent += (match.end() if match else end) - at
            if match is None or (end < size and match.start() > end - self.reach):
                if end == size:
                    break
                # Nothing this slice can vouch for: on from where a match could
                # still begin, in a new slice.
                at = end - self.reach
                spent = SCAN_SLICE
            else:
                found = self._judge(text, match)
                if found is None and rescans > 0 and self._checked(match):
                    rescans -= 1
                    found = self._within(text, match.start(), match.end(), match)
                if found is None:
                    at = max(match.end(), match.start() + 1)
                else:
                    findings.append(Finding(found.kind, *folded.span(found.start, found.end)))
                    at = max(found.end, found.start + 1)
            if spent >= SCAN_SLICE:
                spent = 0
                yield
        return findings

    def _checked(self, match: re.Match[str]) -> bool:
        group = match.lastgroup
        assert group is not None
        return self._detectors[group].check is not None

    def _judge(self, text: str, match: re.Match[str]) -> Finding | None:
        """The match as a finding, if it passes its detector's check (with its tail)."""
        if match.end() == match.start():
            return None  # a custom pattern's empty match (at a word boundary, say): no entity
        group = match.lastgroup
        assert group is not None
        detector = self._detectors[group]
        if detector.check is not None and not detector.check(match.group()):
            return None
        end = match.end()
        tail = self._tails.get(group)
        if tail is not None:
            rest = tail.match(text, end)
            if rest is not None:
                end = rest.end()
        return Finding(detector.kind, match.start(), end)

    def _within(self, text: str, start: int, end: int, match: re.Match[str]) -> Finding | None:
        """The earliest, then longest, valid finding inside a failed candidate's span,
        tried between the span's word boundaries: of any kind where the span starts,
        and further in of the failed kind only (the digits inside a bad IBAN are no
        phone number). A candidate that only looked alike (a 14-digit run failing
        Luhn) must not hide what it overlaps: a phone number, or a card after `3 `."""
        if end - start > _MAX_RESCAN_CHARS:
            return None
        group = match.lastgroup
        assert group is not None
        failed = self._detectors[group]
        span = range(start, end)
        starts = [
            p for p in span if p == start or (text[p - 1].isspace() and not text[p].isspace())
        ]
        ends = [q for q in reversed(span) if q > start and text[q].isspace()]
        for first in starts:
            for last in (end, *(q for q in ends if q > first)):
                for pattern, detector in self._each:
                    if first != start and detector is not failed:
                        continue
                    inner = pattern.fullmatch(text, first, last)
                    if inner and (detector.check is None or detector.check(inner.group())):
                        return Finding(detector.kind, first, last)
        return None

    def redact(
        self, text: str, findings: Sequence[Finding] | None = None, template: str = "[REDACTED:{}]"
    ) -> str:
        """`text` with each finding (found now if not given) replaced by `template`
        naming its kind."""
        findings = self.find(text) if findings is None else findings
        if not findings:
            return text
        pieces: list[str] = []
        at = 0
        for found in findings:
            pieces += (text[at : found.start], template.format(found.kind))
            at = found.end
        pieces.append(text[at:])
        return "".join(pieces)
