"""Routing: a public model name → the deployments that may serve a call, in order.

A model has one or more deployments (provider + upstream model + weight) and an
ordered list of fallback models. For each call the router orders the candidates:
the model's own deployments by its balancing policy (weighted random, or least
outstanding requests), then each fallback's; deployments whose circuit is open
go last, to be skipped while they stay open (as are deployments cooling down after
a 429, until their Retry-After passes). Content rules (e.g. long prompts to
a long-context model) may first swap the model. Each deployment's circuit
breaker and concurrency limiter live here, one per (provider, upstream model),
shared by every model that uses it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ai_service.config import ModelSettings, ResilienceSettings, deployment_limits
from ai_service.errors import InvalidRequest, ModelNotFound, PermissionDenied, quoted
from ai_service.identity.callers import Caller
from ai_service.providers import Deployment, Provider
from ai_service.resilience import CircuitBreaker, CircuitState, ConcurrencyLimiter, Cooldown
from ai_service.routing import capabilities
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, ModelCapabilities


@dataclass(eq=False, slots=True)
class DeploymentHandle:
    """A deployment with its adapter and its live state."""

    target: Deployment
    provider: Provider
    breaker: CircuitBreaker
    limiter: ConcurrencyLimiter
    #: `target.name`, built once: every answer and every chunk is stamped with it.
    name: str = field(init=False)
    #: Set by an upstream 429's Retry-After: the deployment is skipped until it passes.
    cooldown: Cooldown = field(default_factory=Cooldown)

    def __post_init__(self) -> None:
        self.name = self.target.name


@dataclass(frozen=True, slots=True)
class WeightedDeployment:
    handle: DeploymentHandle
    weight: float


@dataclass(frozen=True, slots=True)
class ModelRoute:
    model: ModelSettings
    deployments: tuple[WeightedDeployment, ...]
    #: What a cached answer of this route depends on (its model's and its fallbacks'
    #: settings): a reload that repoints the model starts its answers afresh.
    fingerprint: str

    @property
    def name(self) -> str:
        return self.model.name

    def uses(self, handle: DeploymentHandle) -> bool:
        return any(d.handle is handle for d in self.deployments)


class Router:
    def __init__(
        self,
        models: Iterable[ModelSettings],
        providers: Mapping[str, Provider],
        resilience: ResilienceSettings,
        on_circuit_change: Callable[[CircuitBreaker], None] | None = None,
        rng: random.Random | None = None,
        previous: Router | None = None,
    ) -> None:
        """`previous`: the router a reload replaces. A deployment it served on the same
        provider with the same limits keeps its handle, so its circuit and its calls in
        flight carry over instead of starting from nothing."""
        self._rng = rng or random.Random()
        kept = {h.target: h for h in previous.deployments} if previous is not None else {}
        handles: dict[Deployment, DeploymentHandle] = {}
        self._routes: dict[str, ModelRoute] = {}
        by_name = {model.name: model for model in models}
        # A deployment's limits, from whichever model sets them (they may share it).
        limits = deployment_limits(tuple(by_name.values()))
        for model in by_name.values():
            weighted = []
            for settings in model.targets:
                target = Deployment(settings.provider, settings.upstream_model)
                handle = handles.get(target)
                if handle is None:
                    concurrency = resilience.concurrency
                    set_in_flight, set_queue = limits[(target.provider, target.upstream_model)]
                    max_in_flight = set_in_flight or concurrency.max_in_flight
                    max_queue = concurrency.max_queue if set_queue is None else set_queue
                    old = kept.get(target)
                    if (
                        old is not None
                        and old.provider is providers[settings.provider]
                        and old.breaker.settings == resilience.circuit_breaker
                        and (old.limiter.max_in_flight, old.limiter.max_queue)
                        == (max_in_flight, max_queue)
                    ):
                        handle = handles[target] = old
                    else:
                        handle = handles[target] = DeploymentHandle(
                            target=target,
                            provider=providers[settings.provider],
                            breaker=CircuitBreaker(
                                target.name, resilience.circuit_breaker, on_circuit_change
                            ),
                            limiter=ConcurrencyLimiter(target.name, max_in_flight, max_queue),
                        )
                weighted.append(WeightedDeployment(handle, settings.weight))
            serving = (model, *(by_name[name] for name in model.fallbacks))
            fingerprint = hashlib.sha256(
                "\n".join(m.model_dump_json() for m in serving).encode()
            ).hexdigest()[:16]
            self._routes[model.name] = ModelRoute(model, tuple(weighted), fingerprint)
        self.deployments: tuple[DeploymentHandle, ...] = tuple(handles.values())
        # Built once here, read on every call (`default_max_tokens`, `output_cap`).
        self._serving = {name: self._serving_of(route) for name, route in self._routes.items()}
        # Each candidate's capabilities as the model it serves a route's calls as.
        self._capabilities = {
            name: {
                handle: capabilities.capabilities_of(model, handle.provider.carries)
                for handle, model in serving.items()
            }
            for name, serving in self._serving.items()
        }
        self._narrows = {
            name: any(
                handle.provider.refuses_requests
                or model.max_output_tokens is not None
                or not all(
                    self._capabilities[name][handle][c] for c in capabilities.CHAT_CAPABILITIES
                )
                for handle, model in serving.items()
            )
            for name, serving in self._serving.items()
        }

    @property
    def routes(self) -> tuple[ModelRoute, ...]:
        return tuple(self._routes.values())

    def resolve(self, model: str, caller: Caller) -> ModelRoute:
        """The route for `model`, if it exists and `caller` may use it."""
        if not caller.may_use(model):
            # Checked first: a restricted key learns nothing about other models.
            raise PermissionDenied(f"key {caller.name!r} may not use model {quoted(model)}")
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(
                f"model {quoted(model)} is not served here; ListModels shows the choices"
            )
        return route

    def apply_rules(self, route: ModelRoute, request: ChatCompletionRequest) -> ModelRoute:
        """The model the content rules pick for this request (the configured owner's choice)."""
        if not route.model.rules:
            return route
        prompt_chars = sum(len(message.content) for message in request.messages)
        for rule in route.model.rules:
            if prompt_chars >= rule.min_prompt_chars:
                return self._routes[rule.model]
        return route

    def candidates(self, route: ModelRoute) -> list[DeploymentHandle]:
        """Every deployment that may serve the call, best first, each once."""
        ordered = self._balanced(route)
        for name in route.model.fallbacks:
            for handle in self._balanced(self._routes[name]):
                if handle not in ordered:
                    ordered.append(handle)
        if len(ordered) > 1:
            # Open circuits last: they are skipped while open, tried if they cool down.
            ordered.sort(key=lambda handle: handle.breaker.state is CircuitState.OPEN)
        return ordered

    def can_serve(self, route: ModelRoute) -> bool:
        """Whether a call to `route` would find a deployment to take it now: one of its
        own or of its fallbacks whose circuit admits a call. Health says SERVING
        exactly then, and the dispatcher refuses for want of a deployment only otherwise."""
        return any(handle.breaker.allows() for handle in self._serving[route.name])

    def default_max_tokens(self, route: ModelRoute, handle: DeploymentHandle) -> int:
        """The max_tokens `handle` is sent for `route` when the request sets none: that
        of the model it serves for the call (`route`'s own, or the first fallback's
        that uses it). Deployments are shared between models; their defaults are not."""
        return self._serving[route.name][handle].effective_default_max_tokens

    def may_narrow(self, route: ModelRoute) -> bool:
        """Whether some candidate of `route` may be unable to take a request: its
        provider refuses some, or its model caps max_tokens (else all can take any)."""
        return self._narrows[route.name]

    def output_cap(self, route: ModelRoute, handle: DeploymentHandle) -> int | None:
        """The most max_tokens `handle` may be asked for on `route`'s calls: the cap of
        the model it serves for them (a fallback's own applies when it serves)."""
        return self._serving[route.name][handle].max_output_tokens

    def refusal(
        self,
        route: ModelRoute,
        handle: DeploymentHandle,
        request: ChatCompletionRequest,
        needs: dict[str, str],
    ) -> InvalidRequest | None:
        """Why `handle` cannot take `request` on `route`'s calls: the model it serves them
        as lacks a capability the request `needs` (`capabilities.needs_of`), or its
        provider's API cannot take the request; None when it can."""
        # Named as the caller named it (a content rule may have picked another model).
        able = self._capabilities[route.name][handle]
        lacking = capabilities.refusal(needs, able, request.model)
        return lacking or handle.provider.refusal(request)

    def capabilities(self, route: ModelRoute) -> ModelCapabilities:
        """What `route`'s model has on at least one of its own deployments (the router
        skips the others for a call that needs it), for ListModels."""
        own = [self._capabilities[route.name][d.handle] for d in route.deployments]
        merged = {name: any(c[name] for c in own) for name in own[0]}
        return capabilities.as_proto(merged, route.model)

    def embedders(self, route: ModelRoute) -> list[DeploymentHandle]:
        """`route`'s candidates (fallbacks included) that may serve an Embed call."""
        able = self._capabilities[route.name]
        return [handle for handle in self.candidates(route) if able[handle]["embeddings"]]

    def _serving_of(self, route: ModelRoute) -> dict[DeploymentHandle, ModelSettings]:
        """Every candidate of `route` → the model it serves `route`'s calls as."""
        serving = (route, *(self._routes[name] for name in route.model.fallbacks))
        models: dict[DeploymentHandle, ModelSettings] = {}
        for model_route in reversed(serving):  # the earlier model wins a shared deployment
            for deployment in model_route.deployments:
                models[deployment.handle] = model_route.model
        return models

    def _balanced(self, route: ModelRoute) -> list[DeploymentHandle]:
        deployments = route.deployments
        if len(deployments) == 1:
            return [deployments[0].handle]
        if route.model.balancing == "least_outstanding":
            keyed = [
                (
                    (d.handle.limiter.in_flight + d.handle.limiter.queued) / d.weight,
                    self._rng.random(),
                    d,
                )
                for d in deployments
            ]
            return [d.handle for *_, d in sorted(keyed, key=lambda k: (k[0], k[1]))]
        # Weighted random order (Efraimidis-Spirakis): the first is drawn by weight,
        # and so is each next one among the rest.
        keyed_random = [(self._rng.random() ** (1.0 / d.weight), d) for d in deployments]
        return [d.handle for _, d in sorted(keyed_random, key=lambda k: -k[0])]

    def visible_to(self, caller: Caller) -> list[ModelRoute]:
        return [route for name, route in self._routes.items() if caller.may_use(name)]


def _outstanding(deployment: WeightedDeployment) -> int:
    limiter = deployment.handle.limiter
    return limiter.in_flight + limiter.queued
