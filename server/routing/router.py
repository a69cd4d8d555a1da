"""Routing: a public model name → the deployments that may serve a call, in order.

A model has one or more deployments (provider + upstream model + weight) and an
ordered list of fallback models. For each call the router orders the candidates:
the model's own deployments by its balancing policy (weighted random, or least
outstanding requests), then each fallback's; deployments whose circuit is open
go last, to be skipped while they stay open (as are deployments cooling down after
a 429, until their Retry-After passes). Content rules (e.g. long prompts to
a long-context model) may first swap the model. A key's `models` list binds all of
it: a rule whose model the key may not use is passed over, and its calls see the
route without the fallbacks it may not use (so no attempt, hedge or cached answer
comes from one). Each deployment's circuit
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
    #: settings): a reload that repoints the model starts its answers afresh, and a key
    #: that may not use some fallback never shares the answers one of them gave.
    fingerprint: str
    #: The fallbacks this route may reach: the model's own, less those the caller's key
    #: may not use (`Router.resolve` and `apply_rules` hand out only such views).
    fallbacks: tuple[str, ...]

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
        upstreams: Mapping[str, str] | None = None,
    ) -> None:
        """`previous`: the router a reload replaces. A deployment it served on the same
        provider with the same limits keeps its handle, so its circuit and its calls in
        flight carry over instead of starting from nothing. `upstreams`: provider name →
        its settings as text (secrets masked), part of each route's fingerprint, so a
        reload that repoints a provider starts its routes' cached answers afresh."""
        self._rng = rng or random.Random()
        self._upstreams: Mapping[str, str] = upstreams or {}
        kept = {h.target: h for h in previous.deployments} if previous is not None else {}
        handles: dict[Deployment, DeploymentHandle] = {}
        self._routes: dict[str, ModelRoute] = {}
        by_name = self._by_name = {model.name: model for model in models}
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
            self._routes[model.name] = self._route(model, tuple(weighted), model.fallbacks)
        self.deployments: tuple[DeploymentHandle, ...] = tuple(handles.values())
        # Built once per route (and per restricted view, when first asked for), read on
        # every call (`default_max_tokens`, `output_cap`, `may_narrow`).
        self._serving: dict[tuple[str, tuple[str, ...]], dict[DeploymentHandle, ModelSettings]] = {}
        self._narrows: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._views: dict[tuple[str, tuple[str, ...]], ModelRoute] = {}
        # Each candidate's capabilities as the model it serves a route's calls as.
        self._capabilities: dict[
            tuple[str, tuple[str, ...]], dict[DeploymentHandle, dict[str, bool]]
        ] = {}
        for route in self._routes.values():
            self._register(route)

    @property
    def routes(self) -> tuple[ModelRoute, ...]:
        return tuple(self._routes.values())

    def resolve(self, model: str, caller: Caller) -> ModelRoute:
        """The route for `model`, if it exists and `caller` may use it, as `caller` may
        take it: without the fallbacks its key may not use."""
        if not caller.may_use(model):
            # Checked first: a restricted key learns nothing about other models.
            raise PermissionDenied(f"key {caller.name!r} may not use model {quoted(model)}")
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(
                f"model {quoted(model)} is not served here; ListModels shows the choices"
            )
        return self._view(route, caller)

    def apply_rules(
        self, route: ModelRoute, request: ChatCompletionRequest, caller: Caller
    ) -> ModelRoute:
        """The model the content rules pick for this request (the configured owner's
        choice), among those `caller` may use: a rule whose model its key may not use is
        passed over, as if the prompt did not match it."""
        if not route.model.rules:
            return route
        prompt_chars = sum(len(message.content) for message in request.messages)
        for rule in route.model.rules:
            if prompt_chars >= rule.min_prompt_chars and caller.may_use(rule.model):
                return self._view(self._routes[rule.model], caller)
        return route

    def reachable(self, route: ModelRoute) -> tuple[ModelSettings, ...]:
        """Every model whose deployments may serve a call on `route`."""
        return (route.model, *(self._by_name[name] for name in route.fallbacks))

    def candidates(self, route: ModelRoute) -> list[DeploymentHandle]:
        """Every deployment that may serve the call, best first, each once."""
        ordered = self._balanced(route)
        for name in route.fallbacks:
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
        return any(handle.breaker.allows() for handle in self._serving[_key(route)])

    def default_max_tokens(self, route: ModelRoute, handle: DeploymentHandle) -> int:
        """The max_tokens `handle` is sent for `route` when the request sets none: that
        of the model it serves for the call (`route`'s own, or the first fallback's
        that uses it). Deployments are shared between models; their defaults are not."""
        return self._serving[_key(route)][handle].effective_default_max_tokens

    def may_narrow(self, route: ModelRoute) -> bool:
        """Whether some candidate of `route` may be unable to take a request: its
        provider refuses some, or its model caps max_tokens (else all can take any)."""
        return self._narrows[_key(route)]

    def output_cap(self, route: ModelRoute, handle: DeploymentHandle) -> int | None:
        """The most max_tokens `handle` may be asked for on `route`'s calls: the cap of
        the model it serves for them (a fallback's own applies when it serves)."""
        return self._serving[_key(route)][handle].max_output_tokens

    def _route(
        self,
        model: ModelSettings,
        deployments: tuple[WeightedDeployment, ...],
        fallbacks: tuple[str, ...],
    ) -> ModelRoute:
        """`model`'s route; its fingerprint covers the settings of the models that may
        serve it and of the providers they name: what decides the answer it gets."""
        serving = (model, *(self._by_name[name] for name in fallbacks))
        providers = sorted({target.provider for m in serving for target in m.targets})
        described = [m.model_dump_json() for m in serving]
        described += [self._upstreams.get(name, name) for name in providers]
        fingerprint = hashlib.sha256("\n".join(described).encode()).hexdigest()[:16]
        return ModelRoute(model, deployments, fingerprint, fallbacks)

    def _view(self, route: ModelRoute, caller: Caller) -> ModelRoute:
        """`route` less the fallbacks `caller` may not use (`route` itself when it may use
        them all: every unrestricted key). Views are built once and kept."""
        fallbacks = tuple(name for name in route.fallbacks if caller.may_use(name))
        if fallbacks == route.fallbacks:
            return route
        view = self._views.get((route.name, fallbacks))
        if view is None:
            view = self._route(route.model, route.deployments, fallbacks)
            self._register(view)
        return view

    def _register(self, route: ModelRoute) -> None:
        key = _key(route)
        self._views[key] = route
        serving = self._serving[key] = self._serving_of(route)
        able = self._capabilities[key] = {
            handle: capabilities.capabilities_of(model, handle.provider.carries)
            for handle, model in serving.items()
        }
        self._narrows[key] = any(
            handle.provider.refuses_requests
            or model.max_output_tokens is not None
            or not all(able[handle][c] for c in capabilities.CHAT_CAPABILITIES)
            for handle, model in serving.items()
        )

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
        able = self._capabilities[_key(route)][handle]
        lacking = capabilities.refusal(needs, able, request.model)
        return lacking or handle.provider.refusal(request)

    def capabilities(self, route: ModelRoute) -> ModelCapabilities:
        """What `route`'s model has on at least one of its own deployments (the router
        skips the others for a call that needs it), for ListModels."""
        own = [self._capabilities[_key(route)][d.handle] for d in route.deployments]
        merged = {name: any(c[name] for c in own) for name in own[0]}
        return capabilities.as_proto(merged, route.model)

    def embedders(self, route: ModelRoute) -> list[DeploymentHandle]:
        """`route`'s candidates (fallbacks included) that may serve an Embed call."""
        able = self._capabilities[_key(route)]
        return [handle for handle in self.candidates(route) if able[handle]["embeddings"]]

    def _serving_of(self, route: ModelRoute) -> dict[DeploymentHandle, ModelSettings]:
        """Every candidate of `route` → the model it serves `route`'s calls as."""
        serving = (route, *(self._routes[name] for name in route.fallbacks))
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


def _key(route: ModelRoute) -> tuple[str, tuple[str, ...]]:
    return route.name, route.fallbacks


def _outstanding(deployment: WeightedDeployment) -> int:
    limiter = deployment.handle.limiter
    return limiter.in_flight + limiter.queued
