"""The simulator's one typed configuration object, read by the app, changed by the control API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimulatorConfig:
    """How the simulated upstream behaves.

    `latency_ms` and `tokens_per_second` may be changed while the server runs
    (`PUT /_sim/config`); the others are read once per request as well, so a test may
    also assign them directly on `sim.config`.
    """

    latency_ms: float = 0.0
    """Delay before the first byte of every answer (time to first token for a stream)."""
    tokens_per_second: float = 0.0
    """Pacing of streamed token events; 0 sends them as fast as possible."""
    api_key: str | None = None
    """If set, requests must carry this key (`Authorization: Bearer <key>` for OpenAI,
    `api-key` for Azure, `x-goog-api-key` for Gemini), or a token the simulator issued
    (Azure, Vertex), or be signed with it as the AWS secret access key (Bedrock, any
    access key id); it is also the Entra ID client secret the token endpoint takes."""
    unknown_models: frozenset[str] = field(default_factory=frozenset)
    """Model names answered with 404 `model_not_found`; every other name is accepted."""
    listed_models: tuple[str, ...] = ("sim-small", "sim-large")
    """What `GET /v1/models` lists (a listing only: unlisted names work too)."""
    fault_seed: int | None = None
    """Seed of the random source that decides fault `probability`; None seeds from the OS."""
    system_fingerprint: str = "fp_simulator"
    token_lifetime_seconds: float = 3599.0
    """`expires_in` of the access tokens the token endpoints issue (Entra ID, Google
    OAuth, STS credentials); the APIs refuse a token once it has expired."""
    google_service_accounts: dict[str, str] = field(default_factory=dict)
    """Service-account email → its public key (PEM): a JWT assertion from one of them must
    carry its valid RS256 signature. Empty: any well-formed assertion gets a token."""

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.tokens_per_second < 0:
            raise ValueError("tokens_per_second must be >= 0")
        if self.token_lifetime_seconds <= 0:
            raise ValueError("token_lifetime_seconds must be > 0")
