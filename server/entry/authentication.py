"""Who is calling, for either door: the running configuration's authenticator (none with
auth off: everyone is `anonymous`) and the throttle of failed attempts per client address.

A door hands over the call's credentials as metadata (`authorization: Bearer …`,
`x-api-key`); a wrong one is refused `Unauthenticated`, which the door passes through
`judged` with the client's address once it knows it, so an address that keeps failing
is throttled (`identity.throttle`) whichever door it knocks on.
"""

from __future__ import annotations

import logging

from ai_service.errors import GatewayError, Unauthenticated
from ai_service.identity.authenticator import Authenticator
from ai_service.identity.callers import Caller
from ai_service.identity.keyring import Metadata
from ai_service.identity.throttle import FailedAuthThrottle

log = logging.getLogger(__name__)


class Authentication:
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
        self.authenticator = authenticator
        self.anonymous = anonymous
        if authenticator is None:
            log.warning("authentication is OFF: every caller is accepted as 'anonymous'")

    async def caller(self, metadata: Metadata) -> Caller:
        """The caller the metadata presents; Unauthenticated for a wrong or missing
        credential, another GatewayError when the store of issued keys is down."""
        authenticator = self.authenticator
        if authenticator is None:
            return self.anonymous
        return await authenticator.authenticate(metadata)

    async def judged(self, peer: str, error: Unauthenticated) -> GatewayError:
        """The refusal of a failed authentication from `peer` (a gRPC peer string,
        `ipv4:10.0.0.1:5000`): `error`, or AuthThrottled once the address has failed
        too often."""
        if self._throttle is None:
            return error
        return await self._throttle.judge(peer, error)
