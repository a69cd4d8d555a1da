"""Public models: their deployments, fallbacks, content rules and caps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.services import SERVICE_NAMES


class DeploymentSettings(StrictSettings):
    """One place a model is served: a provider and the model name it expects."""

    provider: str
    upstream_model: str = Field(min_length=1)
    #: Share of calls under weighted-random balancing.
    weight: float = Field(1.0, gt=0)
    #: Calls in flight at once on this deployment (default: resilience.concurrency).
    max_concurrency: int | None = Field(None, gt=0)
    #: Calls that may wait for a slot (default: resilience.concurrency).
    max_queue: int | None = Field(None, ge=0)


class RoutingRule(StrictSettings):
    """Send a call to another model when the request matches (e.g. a long-context model)."""

    #: Matches when the characters of all message contents reach this many.
    min_prompt_chars: int = Field(gt=0)
    #: The model that serves matching calls instead.
    model: str


class Capabilities(StrictSettings):
    """What a model takes and gives. Unset: what its provider's API can carry (OpenAI:
    all but embeddings; Anthropic: no audio and no embeddings; Ollama: no documents, no
    audio and no prompt caching); a value here only narrows that (a `true` the API
    cannot carry stays false). Embeddings are off unless set: chat models do not embed;
    and a model with `embeddings: true` is an embedding model, whose chat capabilities
    are off unless set.
    A request that needs what a model lacks skips its deployments, or is refused
    INVALID_ARGUMENT naming the field that needs it."""

    vision: bool | None = None
    documents: bool | None = None
    audio_input: bool | None = None
    reasoning: bool | None = None
    tools: bool | None = None
    prompt_caching: bool | None = None
    embeddings: bool = False
    #: Tokens the model reads and writes in one call, shown in ListModels.
    context_window: int | None = Field(None, gt=0)

    def allows(self, name: str) -> bool:
        """Whether the configuration lets the model have capability `name`."""
        value = getattr(self, name)
        if value is None:  # unset: on for a chat model, off for an embedding model
            return name != "embeddings" and not self.embeddings
        return bool(value)


class ModelSettings(StrictSettings):
    """A public model name and the deployments that serve it."""

    name: str = Field(min_length=1)

    #: Short form for a single deployment: `provider` + `upstream_model`.
    provider: str | None = None
    upstream_model: str | None = Field(None, min_length=1)
    #: Or several deployments, balanced and failed over between.
    deployments: tuple[DeploymentSettings, ...] = ()
    balancing: Literal["weighted_random", "least_outstanding"] = "weighted_random"
    #: Models tried, in order, when every deployment of this one failed or is open.
    fallbacks: tuple[str, ...] = ()
    #: Content-aware routing, first match wins.
    rules: tuple[RoutingRule, ...] = ()
    #: Start the same call on a second deployment when the first has not answered
    #: (or sent its first token) by then; the first to answer wins.
    hedge_after_ms: float | None = Field(None, gt=0)
    #: Upper bound on max_tokens a caller may ask of this model.
    max_output_tokens: int | None = Field(None, gt=0)
    #: max_tokens sent when a request sets none, to providers whose API requires one
    #: (Anthropic); OpenAI and Ollama leave it unset (the model's own limit). Capped
    #: by max_output_tokens.
    default_max_tokens: int = Field(1024, gt=0)
    #: What the model takes and gives (images, documents, audio, reasoning, tools, prompt
    #: caching, embeddings), within what its provider's API can carry.
    capabilities: Capabilities = Field(default_factory=Capabilities)

    @property
    def effective_default_max_tokens(self) -> int:
        cap = self.max_output_tokens
        return self.default_max_tokens if cap is None else min(self.default_max_tokens, cap)

    @field_validator("name")
    @classmethod
    def _not_a_service_name(cls, name: str) -> str:
        if name in SERVICE_NAMES:
            raise ValueError(f"{name!r} is a gRPC service's name, which health reports on")
        return name

    @model_validator(mode="after")
    def _one_way_to_deploy(self) -> ModelSettings:
        short = self.provider is not None or self.upstream_model is not None
        if short and self.deployments:
            raise ValueError("give either provider + upstream_model or deployments, not both")
        if short and (self.provider is None or self.upstream_model is None):
            raise ValueError("the short form needs both provider and upstream_model")
        if not short and not self.deployments:
            raise ValueError("give provider + upstream_model, or deployments")
        if self.name in self.fallbacks:
            raise ValueError("fallbacks: a model cannot fall back to itself")
        return self

    @property
    def targets(self) -> tuple[DeploymentSettings, ...]:
        """The deployments, whichever form the config used."""
        if self.deployments:
            return self.deployments
        assert self.provider is not None and self.upstream_model is not None
        return (DeploymentSettings(provider=self.provider, upstream_model=self.upstream_model),)


def deployment_limits(
    models: Sequence[ModelSettings],
) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """Each deployment (provider, upstream model) → its max_concurrency and max_queue,
    from whichever model sets them (None: the resilience defaults). Models may share a
    deployment, which has one limit: two models setting two values are refused."""
    limits: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    for i, model in enumerate(models):
        for j, target in enumerate(model.targets):
            key = (target.provider, target.upstream_model)
            known = limits.get(key, (None, None))
            merged = []
            for name, have, wanted in zip(
                ("max_concurrency", "max_queue"),
                known,
                (target.max_concurrency, target.max_queue),
                strict=True,
            ):
                if have is not None and wanted is not None and have != wanted:
                    raise ValueError(
                        f"models[{i}].deployments[{j}].{name}: {target.provider}/"
                        f"{target.upstream_model} is another model's deployment too, with "
                        f"{name} {have}; a deployment has one limit"
                    )
                merged.append(wanted if wanted is not None else have)
            limits[key] = (merged[0], merged[1])
    return limits
