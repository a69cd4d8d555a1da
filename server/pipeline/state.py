"""What a call reads from the configuration, built once per configuration."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ai_service.config import GatewayConfig, RequestLimits
from ai_service.pipeline.answers import Answers
from ai_service.pipeline.usage import UsageReports
from ai_service.policy.redaction import RedactionPolicy
from ai_service.routing.router import Router
from ai_service.timers import Timers


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Everything a call reads from configuration, swapped whole on a reload."""

    limits: RequestLimits
    default_deadline: float
    router: Router
    answers: Answers
    policy: RedactionPolicy
    usage: UsageReports
    #: The deadlines of calls, on the serving loop's shared timer: a state serves the
    #: calls of the loop it was built on.
    timers: Timers

    @classmethod
    def build(
        cls, config: GatewayConfig, router: Router, answers: Answers, usage: UsageReports
    ) -> ServiceState:
        """Called on the serving loop (at start and on a reload)."""
        audit = config.observability.audit
        return cls(
            limits=config.limits,
            default_deadline=config.server.default_deadline_seconds,
            router=router,
            answers=answers,
            policy=RedactionPolicy(
                config.redaction, keep_text=audit.path is not None and audit.include_prompts
            ),
            usage=usage,
            timers=Timers.of(asyncio.get_running_loop()),
        )
