"""Text as the detectors see it, and the way back to the caller's own characters.

Detection runs on a folded copy: each character's NFKC form (fullwidth digits become
digits, a non-breaking or thin space a space, a fullwidth `@` an `@`), with zero-width and other
invisible format characters (Unicode category Cf) and combining marks (Mn) removed,
so `4111\\u200b1111…` is a card number. Each character folds on its own (no
composition across characters): what a character becomes never depends on its
neighbours, so a text can be folded a slice at a time. `Folded.span` maps a match in
the folded copy back to the span of the original text it came from, which is what
redaction replaces.

ASCII text, the usual case, folds to itself at the cost of one `isascii()`.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Generator
from dataclasses import dataclass, field

#: Characters folded per step of a sliced fold (see `folded_steps`).
FOLD_SLICE = 8192

_REMOVED_CATEGORIES = frozenset({"Cf", "Mn"})
#: Characters whose form is kept: a text of every code point there is must not grow the
#: table to a hundred megabytes (past this, forms are worked out each time instead).
_MAX_KEPT = 100_000


class _FoldTable(dict[int, str]):
    """code point → its folded form, filled in as characters are first seen; the
    code points whose form differs are collected for `_changing`."""

    def __init__(self) -> None:
        super().__init__()
        self.changing: list[str] = []

    def __missing__(self, code: int) -> str:
        char = chr(code)
        folded = "".join(
            c
            for c in unicodedata.normalize("NFKC", char)
            if unicodedata.category(c) not in _REMOVED_CATEGORIES
        )
        if len(self) < _MAX_KEPT:
            self[code] = folded
            if folded != char:
                self.changing.append(char)
        return folded


_TABLE = _FoldTable()
_changing_pattern: tuple[int, re.Pattern[str]] = (0, re.compile("(?!)"))


def _changing() -> re.Pattern[str]:
    """A pattern of every character seen so far whose folded form differs."""
    global _changing_pattern
    seen, pattern = _changing_pattern
    if seen != len(_TABLE.changing):
        chars = "".join(re.escape(c) for c in _TABLE.changing)
        _changing_pattern = (len(_TABLE.changing), re.compile(f"[{chars}]"))
        pattern = _changing_pattern[1]
    return pattern


@dataclass(slots=True)
class Folded:
    """A text's folded copy and the map back (empty when nothing changed)."""

    text: str
    #: For each changed character, in order: where its form starts in the folded
    #: copy, where the character is in the original, and the form's length.
    _folded_at: list[int] = field(default_factory=list)
    _original_at: list[int] = field(default_factory=list)
    _lengths: list[int] = field(default_factory=list)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span the folded span [start, end) came from (end > start)."""
        if not self._folded_at:
            return start, end
        return self._original(start)[0], self._original(end - 1)[1]

    def _original(self, at: int) -> tuple[int, int]:
        """The original character that folded position `at` comes from, as a span."""
        i = bisect.bisect_right(self._folded_at, at) - 1
        if i < 0:
            return at, at + 1
        folded_at, original_at, length = self._folded_at[i], self._original_at[i], self._lengths[i]
        if at < folded_at + length:
            return original_at, original_at + 1
        original = original_at + 1 + at - folded_at - length
        return original, original + 1


def folded_steps(text: str) -> Generator[None, None, Folded]:
    """Fold `text`, yielding after each `FOLD_SLICE` characters of a long non-ASCII text."""
    if text.isascii():
        return Folded(text)
    result = Folded("")
    pieces: list[str] = []
    folded_length = 0
    for at in range(0, len(text), FOLD_SLICE):
        if at:
            yield
        part = text[at : at + FOLD_SLICE]
        folded = part.translate(_TABLE)
        if folded == part:
            pieces.append(part)
            folded_length += len(part)
            continue
        done = 0
        for match in _changing().finditer(part):
            i = match.start()
            form = _TABLE[ord(part[i])]
            pieces.append(part[done:i])
            folded_length += i - done
            result._folded_at.append(folded_length)
            result._original_at.append(at + i)
            result._lengths.append(len(form))
            pieces.append(form)
            folded_length += len(form)
            done = i + 1
        pieces.append(part[done:])
        folded_length += len(part) - done
    result.text = "".join(pieces)
    return result


def fold(text: str) -> Folded:
    steps = folded_steps(text)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            folded: Folded = done.value
            return folded
