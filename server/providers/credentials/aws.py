"""AWS Signature Version 4 on every request, for Bedrock: botocore's signer and chain.

Static keys from the config, or else botocore's credential chain as the AWS CLI walks it
(environment, shared credentials and config files and their profile, web identity,
container and instance metadata). Temporary credentials are botocore's
`RefreshableCredentials`: botocore decides when they need renewing (15 minutes ahead,
10 mandatory) and renews them itself; since that blocks on the network, a renewal (and
the first resolution of the chain) runs in a worker thread, one at a time. Calls to STS
(web identity, assumed roles) go the provider's way out: its proxy and CA bundle.

Each request is signed whole (`SigV4Auth`, service `bedrock`): the exact URL that is
sent, the exact body bytes, `host` and `content-type`; the signature headers
(`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`) go with the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as AwsCredentials
from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamUnavailable, keep_secret
from ai_service.providers.credentials import OutgoingRequest
from ai_service.providers.credentials.tokens import RETRY_AFTER_FAILURE, credential_failure

#: Bedrock's signing name (bedrock-runtime's service model: `signingName: bedrock`).
SERVICE = "bedrock"

# botocore logs whole request and response bodies at DEBUG, STS's temporary credentials
# among them, before the gateway has them to register as secrets: its loggers stop at INFO.
logging.getLogger("botocore").setLevel(logging.INFO)
_SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
_WHAT = "AWS credentials"


class SigV4:
    dynamic = True
    static_headers: Mapping[str, str] = {}

    def __init__(self, settings: ProviderSettings, service: str = SERVICE) -> None:
        bedrock = settings.bedrock
        assert bedrock is not None
        self._provider = settings.name
        self._settings = settings
        self._region = bedrock.region
        self._service = service
        self._lock = asyncio.Lock()
        self._credentials: Any = None
        if bedrock.access_key_id is not None and bedrock.secret_access_key is not None:
            token = bedrock.session_token
            self._credentials = AwsCredentials(
                bedrock.access_key_id.get_secret_value(),
                bedrock.secret_access_key.get_secret_value(),
                token.get_secret_value() if token is not None else None,
            )
        self._kept: tuple[str, str | None] | None = None
        self._failure: UpstreamUnavailable | None = None
        self._quiet_until = 0.0

    async def authorize(self, request: OutgoingRequest) -> Mapping[str, str]:
        frozen = await self._frozen()
        signed = AWSRequest(
            method="POST",
            url=request.url,
            data=request.body,
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        SigV4Auth(frozen, self._service, self._region).add_auth(signed)
        return {name: signed.headers[name] for name in _SIGNATURE_HEADERS if name in signed.headers}

    def refused(self, sent: Mapping[str, str]) -> bool:
        return False  # botocore decides when its credentials are renewed

    async def aclose(self) -> None:
        pass

    async def _frozen(self) -> ReadOnlyCredentials:
        if self._failure is not None and time.monotonic() < self._quiet_until:
            raise UpstreamUnavailable(self._failure.message)  # not asked again so soon
        try:
            credentials = self._credentials
            if credentials is None:
                async with self._lock:
                    if self._credentials is None:
                        self._credentials = await asyncio.to_thread(self._resolve)
                credentials = self._credentials
            if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
                async with self._lock:  # one renewal at a time; botocore's own lock blocks
                    frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
            else:
                frozen = credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError, OSError) as exc:
            self._failed(credential_failure(self._provider, _WHAT, f"{type(exc).__name__}: {exc}"))
        except UpstreamUnavailable as exc:
            self._failed(exc)
        self._failure = None
        self._keep(frozen)
        return frozen

    def _failed(self, error: UpstreamUnavailable) -> NoReturn:
        # Resolving the chain probes instance metadata (a second or more off EC2), and
        # callers queue on the lock: a failure stands for a while instead.
        self._failure, self._quiet_until = error, time.monotonic() + RETRY_AFTER_FAILURE
        raise error

    def _keep(self, frozen: Any) -> None:
        pair = (frozen.secret_key, frozen.token)
        if pair != self._kept:
            self._kept = pair
            for secret in pair:
                if secret:
                    keep_secret(secret)

    def _resolve(self) -> Any:
        """botocore's chain, as the AWS CLI would walk it with these settings."""
        bedrock = self._settings.bedrock
        assert bedrock is not None
        session = botocore.session.Session(profile=bedrock.profile)
        if bedrock.credentials_file is not None:
            session.set_config_variable("credentials_file", bedrock.credentials_file)
        if bedrock.config_file is not None:
            session.set_config_variable("config_file", bedrock.config_file)
        egress = self._settings.egress
        if egress.tls.ca_file is not None:
            session.set_config_variable("ca_bundle", egress.tls.ca_file)
        proxy = egress.proxy_url
        session.set_default_client_config(
            Config(
                proxies={"http": proxy, "https": proxy} if proxy else None,
                connect_timeout=self._settings.timeouts.connect,
                read_timeout=self._settings.timeouts.read,
                retries={"max_attempts": 2},
            )
        )
        credentials = session.get_credentials()
        if credentials is None:
            where = f"profile {bedrock.profile!r}" if bedrock.profile else "the default profile"
            raise credential_failure(
                self._provider,
                _WHAT,
                f"none found (environment, shared files with {where}, web identity, "
                f"container or instance metadata)",
            )
        return credentials
