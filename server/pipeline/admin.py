"""The Admin servicer: keys issued, changed, revoked and listed at runtime.

Only a caller holding an admin role (`auth.roles[].admin`) may use it; the interceptors
authenticate its calls and limit their rate as they do AIService's. An issued key's
secret is returned once, by CreateKey; the store keeps its digest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError

from ai_service.calls.record import request_id_metadata
from ai_service.config import BudgetSettings, CallerGrants, GatewayConfig, RateLimitSettings
from ai_service.errors import GatewayError, InvalidRequest, abort, quoted
from ai_service.identity.callers import Caller, current_caller
from ai_service.identity.virtual_keys import StoredKey, VirtualKeys
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import (
    CreateKeyRequest,
    CreateKeyResponse,
    IssuedKey,
    KeyBudget,
    KeyRateLimit,
    KeySpec,
    ListKeysRequest,
    ListKeysResponse,
    RevokeKeyRequest,
    RevokeKeyResponse,
    UpdateKeyRequest,
)

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")

#: The longest name an issued key may have (it is a metric label and a log field).
MAX_NAME_CHARS = 128


class AdminRequired(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "ADMIN_ROLE_REQUIRED"


def require_admin(caller: Caller, to: str) -> None:
    """The one rule for acting beyond oneself: an admin role (`auth.roles[].admin`)."""
    if not caller.admin:
        raise AdminRequired(
            f"caller {caller.name!r} holds no admin role: to {to} takes a caller with a "
            f"role marked admin (auth.roles)"
        )


class VirtualKeysOff(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "VIRTUAL_KEYS_OFF"


class KeyNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "KEY_NOT_FOUND"


class KeyNameTaken(GatewayError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "KEY_NAME_TAKEN"


class AdminService(ai_service_pb2_grpc.AdminServicer):  # type: ignore[misc]
    """`keys()` gives the issued keys (None when switched off), `config()` the running
    config (its models, roles and keys), both as of each call: a reload changes them."""

    def __init__(
        self, keys: Callable[[], VirtualKeys | None], config: Callable[[], GatewayConfig]
    ) -> None:
        self._keys = keys
        self._config = config

    async def CreateKey(self, request: CreateKeyRequest, context: Context) -> CreateKeyResponse:
        async def create(keys: VirtualKeys) -> CreateKeyResponse:
            name, grants, expires_at = self._parsed(request.spec, "spec")
            await self._name_is_free(keys, name, None)
            admin = current_caller.get().name
            key, secret = await keys.create(name, grants, expires_at, admin)
            log.info("key issued", extra={"key_id": key.id, "key": name, "admin": admin})
            return CreateKeyResponse(key=issued(key), secret=secret)

        return await self._run(context, create)

    async def UpdateKey(self, request: UpdateKeyRequest, context: Context) -> IssuedKey:
        async def update(keys: VirtualKeys) -> IssuedKey:
            key = await _existing(keys, request.id)
            spec = request.spec
            if request.update_mask.paths:
                mask = request.update_mask
                if not mask.IsValidForDescriptor(KeySpec.DESCRIPTOR):  # type: ignore[arg-type]
                    raise InvalidRequest("update_mask", "names a field KeySpec does not have")
                spec = spec_of(key)
                mask.MergeMessage(
                    request.spec, spec, replace_message_field=True, replace_repeated_field=True
                )
            name, grants, expires_at = self._parsed(spec, "spec")
            await self._name_is_free(keys, name, key.id)
            changed = key.model_copy(
                update={"name": name, "grants": grants, "expires_at": expires_at}
            )
            await keys.replace(changed)
            log.info("key changed", extra={"key_id": key.id, "key": name})
            return issued(changed)

        return await self._run(context, update)

    async def RevokeKey(self, request: RevokeKeyRequest, context: Context) -> RevokeKeyResponse:
        async def revoke(keys: VirtualKeys) -> RevokeKeyResponse:
            key = await _existing(keys, request.id)
            await keys.revoke(key)
            log.info("key revoked", extra={"key_id": key.id, "key": key.name})
            return RevokeKeyResponse(key=issued(key))

        return await self._run(context, revoke)

    async def ListKeys(self, request: ListKeysRequest, context: Context) -> ListKeysResponse:
        async def list_keys(keys: VirtualKeys) -> ListKeysResponse:
            found = await keys.all()
            if request.team:
                found = [key for key in found if key.grants.team == request.team]
            return ListKeysResponse(keys=[issued(key) for key in found])

        return await self._run(context, list_keys)

    async def _run(self, context: Context, action: Callable[[VirtualKeys], Awaitable[R]]) -> R:
        try:
            require_admin(current_caller.get(), "use the Admin service")
            keys = self._keys()
            if keys is None:
                raise VirtualKeysOff(
                    "issued keys are switched off on this gateway (auth.virtual_keys.enabled)"
                )
            return await action(keys)
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
            raise AssertionError("abort returned") from None

    def _parsed(self, spec: KeySpec, path: str) -> tuple[str, CallerGrants, float | None]:
        """The name, grants and expiry a KeySpec asks for, or InvalidRequest naming the field."""
        name = spec.name.strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"{path}.name", f"must be 1 to {MAX_NAME_CHARS} characters")
        config = self._config()
        models = {model.name for model in config.models}
        for model in spec.models:
            if model not in models:
                raise InvalidRequest(f"{path}.models", f"unknown model {quoted(model)}")
        roles = {role.name for role in config.auth.roles}
        for role in spec.roles:
            if role not in roles:
                raise InvalidRequest(f"{path}.roles", f"unknown role {quoted(role)}")
        try:
            grants = CallerGrants(
                team=spec.team or None,
                roles=tuple(spec.roles),
                models=tuple(spec.models),
                rate_limit=_rate_limit(spec.rate_limit) if spec.HasField("rate_limit") else None,
                max_output_tokens=spec.max_output_tokens or None,
                max_concurrent_streams=spec.max_concurrent_streams or None,
                budget=_budget(spec.budget) if spec.HasField("budget") else None,
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(part) for part in problem["loc"])
            raise InvalidRequest(f"{path}.{field}", problem["msg"]) from None
        expires_at = None
        if spec.HasField("expire_time"):
            expires_at = spec.expire_time.ToNanoseconds() / 1e9
            if expires_at <= time.time():
                raise InvalidRequest(f"{path}.expire_time", "is in the past")
        return name, grants, expires_at

    async def _name_is_free(self, keys: VirtualKeys, name: str, key_id: str | None) -> None:
        # Limits and budgets are kept by name: two callers of one name would share them.
        if any(key.name == name for key in self._config().auth.keys):
            raise KeyNameTaken(f"a key in the config is named {name!r}")
        for key in await keys.all():
            if key.name == name and key.id != key_id:
                raise KeyNameTaken(f"issued key {key.id} is named {name!r}")


async def _existing(keys: VirtualKeys, key_id: str) -> StoredKey:
    if not key_id:
        raise InvalidRequest("id", "is required")
    key = await keys.get(key_id)
    if key is None:
        raise KeyNotFound(f"no issued key has the id {quoted(key_id)}")
    return key


def _rate_limit(limit: KeyRateLimit) -> RateLimitSettings:
    return RateLimitSettings(
        requests_per_minute=limit.requests_per_minute,
        burst=limit.burst or None,
        tokens_per_minute=limit.tokens_per_minute,
        token_burst=limit.token_burst or None,
    )


def _budget(budget: KeyBudget) -> BudgetSettings:
    return BudgetSettings.model_validate(
        {
            "amount": budget.amount or None,
            "period": budget.period or "month",
            "soft": budget.soft or None,
        }
    )


def spec_of(key: StoredKey) -> KeySpec:
    grants = key.grants
    spec = KeySpec(
        name=key.name,
        team=grants.team or "",
        models=grants.models,
        roles=grants.roles,
        max_output_tokens=grants.max_output_tokens or 0,
        max_concurrent_streams=grants.max_concurrent_streams or 0,
    )
    if grants.rate_limit is not None:
        limit = grants.rate_limit
        spec.rate_limit.CopyFrom(
            KeyRateLimit(
                requests_per_minute=limit.requests_per_minute,
                burst=limit.burst or 0,
                tokens_per_minute=limit.tokens_per_minute,
                token_burst=limit.token_burst or 0,
            )
        )
    if grants.budget is not None:
        budget = grants.budget
        spec.budget.CopyFrom(
            KeyBudget(amount=budget.amount or 0, period=budget.period, soft=budget.soft or 0)
        )
    if key.expires_at is not None:
        spec.expire_time.FromNanoseconds(int(key.expires_at * 1e9))
    return spec


def issued(key: StoredKey) -> IssuedKey:
    message = IssuedKey(id=key.id, spec=spec_of(key), created_by=key.created_by)
    message.create_time.FromNanoseconds(int(key.created_at * 1e9))
    return message
