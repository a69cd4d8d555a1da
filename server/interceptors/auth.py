"""Authentication: who is calling, from a key or token in `authorization: Bearer …` or
`x-api-key`, or from the client certificate.

The gateway's `Authentication` (`entry.authentication`, shared with the HTTP door) finds
the caller; this interceptor puts it in `current_caller` for the interceptors and the
servicer after this one (they run in the same task), or refuses the call from its
headers; a client address that keeps failing is throttled (`identity.throttle`). A call
that presents no credential while certificates identify callers is decided by its
handler, which sees the certificate (`deferred`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ai_service.calls.record import current_call
from ai_service.entry.authentication import Authentication
from ai_service.errors import GatewayError, Unauthenticated
from ai_service.identity.authenticator import Authenticator
from ai_service.identity.callers import current_caller
from ai_service.interceptors.deferred import deciding_handler
from ai_service.interceptors.rejection import Handler, is_guarded, rejecting_handler

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates guarded calls; with auth off, everyone is `anonymous`."""

    def __init__(self, authentication: Authentication) -> None:
        #: Shared with the HTTP door: a reload replaces its identities for both.
        self.authentication = authentication

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        authentication = self.authentication
        authenticator = authentication.authenticator
        if authenticator is None:
            current_caller.set(authentication.anonymous)
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        if authenticator.wants_certificate(metadata):
            decide = _by_certificate(authenticator)
            return deciding_handler(method, decide, continuation, handler_call_details)
        try:
            caller = await authentication.caller(metadata)
        except Unauthenticated as error:  # a wrong credential: its address pays for it
            return rejecting_handler(method, error, authentication.judged)
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
