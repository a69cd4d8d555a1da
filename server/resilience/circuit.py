"""A circuit breaker per deployment: closed → open → half-open → closed.

Closed, it counts outcomes in a sliding time window and opens after
`consecutive_failures` in a row, or when `failure_rate` of at least `min_calls`
calls in the window failed. Open, it refuses calls for `open_seconds`; then it
lets `half_open_probes` calls through at once: a success closes it, a failure
opens it again. Transitions are logged and reported to `on_change`, as are probes
taken and given back (while its probes are out a half-open circuit admits nothing).
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable

from ai_service.config import CircuitBreakerSettings

log = logging.getLogger(__name__)


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(enum.Enum):
    """How a call was let through: normally, or as one of the half-open probes."""

    CALL = "call"
    PROBE = "probe"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: CircuitBreakerSettings,
        on_change: Callable[[CircuitBreaker], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._settings = settings
        self._on_change = on_change
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._failures_in_window = 0
        self._probes_in_flight = 0

    @property
    def settings(self) -> CircuitBreakerSettings:
        return self._settings

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._cooled_down():
            return CircuitState.HALF_OPEN
        return self._state

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._settings.open_seconds

    def allows(self) -> bool:
        """Whether a call may go now (without admitting it)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        return self._probes_in_flight < self._settings.half_open_probes

    def admit(self) -> Admission | None:
        """Admit one call (taking a probe slot when half-open), or None when refused."""
        if not self.allows():
            return None
        if self.state is CircuitState.CLOSED:
            return Admission.CALL
        if self._state is CircuitState.OPEN:
            self._transition(CircuitState.HALF_OPEN)
        self._probes_in_flight += 1
        if not self.allows():  # the probes are all out: no other call is admitted now
            self._changed()
        return Admission.PROBE

    def record(self, admission: Admission, *, failed: bool) -> None:
        """The outcome of an admitted call."""
        if admission is Admission.PROBE:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if self._state is CircuitState.HALF_OPEN:
                self._transition(CircuitState.OPEN if failed else CircuitState.CLOSED)
                return
        if self._state is not CircuitState.CLOSED:
            return
        now = self._clock()
        self._outcomes.append((now, failed))
        self._failures_in_window += failed
        horizon = now - self._settings.window_seconds
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._failures_in_window -= self._outcomes.popleft()[1]
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        calls = len(self._outcomes)
        if self._consecutive_failures >= self._settings.consecutive_failures or (
            calls >= self._settings.min_calls
            and self._failures_in_window / calls >= self._settings.failure_rate
        ):
            self._transition(CircuitState.OPEN)

    def abandon(self, admission: Admission) -> None:
        """An admitted call ended without a verdict (the caller cancelled)."""
        if admission is Admission.PROBE:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if self._state is CircuitState.HALF_OPEN:  # a probe may be sent again
                self._changed()

    def _transition(self, state: CircuitState) -> None:
        previous, self._state = self._state, state
        if state is CircuitState.OPEN:
            self._opened_at = self._clock()
            self._probes_in_flight = 0
        if state is CircuitState.CLOSED:
            self._outcomes.clear()
            self._failures_in_window = 0
            self._consecutive_failures = 0
        log.warning(
            "circuit %s",
            state.value,
            extra={"deployment": self.name, "from": previous.value, "to": state.value},
        )
        self._changed()

    def _changed(self) -> None:
        """Whether the circuit admits a call may have changed: tell whoever follows it."""
        if self._on_change is not None:
            self._on_change(self)
