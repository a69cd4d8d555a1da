"""Authentication: who is calling, from `authorization: Bearer <key>` or `x-api-key`.

The key ring (`identity.keyring`) finds the caller; this interceptor puts it in
`current_caller` for the interceptors and the servicer after this one (they run in the
same task), or refuses the call from its headers; a client address that keeps failing
is throttled (`identity.throttle`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, current_caller
from ai_service.identity.keyring import KeyRing
from ai_service.identity.throttle import FailedAuthThrottle
from ai_service.interceptors.rejection import Handler, is_guarded, rejecting_handler

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates calls to AIService; with auth off, everyone is `anonymous`."""

    def __init__(
        self,
        keyring: KeyRing | None,
        anonymous: Caller,
        throttle: FailedAuthThrottle | None = None,
    ) -> None:
        self._throttle = throttle
        self.replace(keyring, anonymous)

    def replace(self, keyring: KeyRing | None, anonymous: Caller) -> None:
        """Take new keys (a config reload); the next call sees them, a running one is done."""
        self._keyring = keyring
        self._anonymous = anonymous
        if keyring is None:
            log.warning("authentication is OFF: every caller is accepted as 'anonymous'")

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        if self._keyring is None:
            current_caller.set(self._anonymous)
            return await continuation(handler_call_details)
        try:
            caller = self._keyring.authenticate(handler_call_details.invocation_metadata)
        except Unauthenticated as error:
            judge = self._throttle.judge if self._throttle is not None else None
            return rejecting_handler(method, error, judge)
        # Set before the continuation: it runs the interceptors after this one.
        current_caller.set(caller)
        return await continuation(handler_call_details)
