"""Authentication: who is calling, from a key or token in `authorization: Bearer …` or
`x-api-key`, or from the client certificate.

The `Authenticator` (`identity.authenticator`) finds the caller; this interceptor puts it
in `current_caller` for the interceptors and the servicer after this one (they run in
the same task), or refuses the call from its headers; a client address that keeps failing
is throttled (`identity.throttle`). A call that presents no credential while certificates
identify callers is decided by its handler, which sees the certificate (`deferred`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ai_service.calls.record import current_call
from ai_service.errors import GatewayError, Unauthenticated
from ai_service.identity.authenticator import Authenticator
from ai_service.identity.callers import Caller, current_caller
from ai_service.identity.throttle import FailedAuthThrottle
from ai_service.interceptors.deferred import deciding_handler
from ai_service.interceptors.rejection import Handler, is_guarded, rejecting_handler

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates guarded calls; with auth off, everyone is `anonymous`."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        anonymous: Caller,
        throttle: FailedAuthThrottle | None = None,
    ) -> None:
        self._throttle = throttle
        self.replace(authenticator, anonymous)

    def replace(self, authenticator: Authenticator | None, anonymous: Caller) -> None:
        """Take new identities (a config reload); the next call sees them, a running one is done."""
        self._authenticator = authenticator
        self._anonymous = anonymous
        if authenticator is None:
            log.warning("authentication is OFF: every caller is accepted as 'anonymous'")

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        authenticator = self._authenticator
        if authenticator is None:
            current_caller.set(self._anonymous)
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata
        if authenticator.wants_certificate(metadata):
            decide = _by_certificate(authenticator)
            return deciding_handler(method, decide, continuation, handler_call_details)
        try:
            caller = await authenticator.authenticate(metadata)
        except Unauthenticated as error:  # a wrong credential: its address pays for it
            judge = self._throttle.judge if self._throttle is not None else None
            return rejecting_handler(method, error, judge)
        except GatewayError as error:  # the store of issued keys is down
            return rejecting_handler(method, error)
        # Set before the continuation: it runs the interceptors after this one.
        current_caller.set(caller)
        return await continuation(handler_call_details)


def _by_certificate(authenticator: Authenticator) -> Callable[[Any], None]:
    def decide(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        caller = authenticator.from_certificate(context.auth_context())
        current_caller.set(caller)
        call = current_call.get(None)  # its record began before the caller was known
        if call is not None:
            call.identify(caller.name, caller.source, caller.team)

    return decide
