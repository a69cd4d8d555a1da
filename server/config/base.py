"""What every settings model shares: strict parsing, and the one error a bad config raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """The configuration cannot be used: one or more problems, each naming its field."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class StrictSettings(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)
