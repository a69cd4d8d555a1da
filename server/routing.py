"""Routing: a public model name → the deployment and provider adapter that serve it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from server.config import ModelSettings
from server.errors import ModelNotFound, PermissionDenied
from server.interceptors.auth import Caller
from server.providers import Deployment, Provider


@dataclass(frozen=True, slots=True)
class Route:
    model: ModelSettings
    deployment: Deployment
    provider: Provider


class Router:
    def __init__(self, models: Iterable[ModelSettings], providers: Mapping[str, Provider]) -> None:
        self._routes = {
            model.name: Route(
                model=model,
                deployment=Deployment(model.provider, model.upstream_model),
                provider=providers[model.provider],
            )
            for model in models
        }

    def resolve(self, model: str, caller: Caller) -> Route:
        """The route for `model`, if it exists and `caller` may use it."""
        if not caller.may_use(model):
            # Checked first: a restricted key learns nothing about other models.
            raise PermissionDenied(f"key {caller.name!r} may not use model {model!r}")
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(f"model {model!r} is not served here; ListModels shows the choices")
        return route

    def visible_to(self, caller: Caller) -> list[Route]:
        return [route for name, route in self._routes.items() if caller.may_use(name)]
