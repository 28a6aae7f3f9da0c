"""One deployment's turn in a request's walk: its attempts with retries (policies/retry.py),
each outcome told to the deployment's breaker, a half-open probe used or given back, and
the turn counted in flight while it runs (a stream's until the stream ends)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from policies.health import Health
from policies.hedge import FirstTokenStats
from policies.plan import DeploymentPlan, Target
from policies.retry import call_with_retries
from policies.state.base import BreakerState
from policies.trace import OpenStream, Trace
from providers.errors import UpstreamError

T = TypeVar("T")


class TurnAttempts:
    """Runs deployments' turns; `health` keeps their breakers (none: retries only), and
    `first_tokens` hears each stream's time to first token (for hedging)."""

    def __init__(self, health: Health | None, first_tokens: FirstTokenStats | None) -> None:
        self._health = health
        self._first_tokens = first_tokens

    async def run(
        self,
        plan: DeploymentPlan,
        trace: Trace,
        target: Target,
        call: Callable[[], Awaitable[T]],
        probe: bool = False,
    ) -> T:
        """One deployment's turn: its retries, each outcome told to its breaker (which, once
        open, ends the turn), and the call counted in flight while it runs.

        `probe`: the breaker granted this turn its half-open probe, which the first attempt
        is. An attempt that ends with no outcome (cancelled by the client or the deadline,
        or an unexpected error) gives the probe back, so the deployment is not skipped
        until the probe times out."""
        health = self._health
        if health is None:
            return await call_with_retries(
                call,
                label=target.label,
                policy=plan.retry,
                deadline=trace.deadline,
                attempts=trace.attempts,
            )
        tripped = False
        probe_out = probe  # until the probe's outcome is recorded

        async def observed() -> T:
            nonlocal tripped, probe_out
            started = time.perf_counter()
            try:
                result = await call()
            except UpstreamError as exc:
                is_probe, probe_out = probe_out, False
                view = await health.failed(target, exc, probe=is_probe)
                tripped = view is not None and view.state is not BreakerState.CLOSED
                raise
            is_probe, probe_out = probe_out, False
            seconds = time.perf_counter() - started
            first_token = seconds if isinstance(result, OpenStream) else None  # its first content
            await health.succeeded(target, seconds, probe=is_probe, first_token_s=first_token)
            if isinstance(result, OpenStream) and self._first_tokens is not None:
                await self._first_tokens.observe(target.label, seconds)  # its first content
            return result

        await health.started(target)
        held = False
        try:
            result = await call_with_retries(
                observed,
                label=target.label,
                policy=plan.retry,
                deadline=trace.deadline,
                attempts=trace.attempts,
                give_up=lambda: tripped,
            )
            if isinstance(result, OpenStream):
                trace.holding, held = target, True
            return result
        finally:
            if probe_out:
                await health.release_probe(target)
            if not held:
                await health.ended(target)
