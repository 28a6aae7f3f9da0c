"""Retries, in exactly one place: which failures are retried on the same deployment, how
long to wait, and when to give up and move on. Built on tenacity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from policies.config import RetrySettings
from providers.errors import Failure, UpstreamError

T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 409, 429})
_DEPLOYMENT_STATUSES = frozenset({401, 403, 404})  # this deployment's fault: try the next
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})


class Decision(Enum):
    RETRY = "retry"  # same deployment again, after a backoff
    NEXT = "next"  # this deployment is done; try the next one in the plan
    CONTEXT_WINDOW = "context_window"  # go to the context-window fallbacks
    FINAL = "final"  # the caller gets this error as it is


def classify(error: UpstreamError) -> Decision:
    """What a failure means for the rest of the plan."""
    if error.failure in (Failure.CONNECT, Failure.STREAM_BROKEN):
        return Decision.RETRY
    if error.failure in (Failure.TIMEOUT, Failure.PROTOCOL, Failure.OWN_LIMIT):
        return Decision.NEXT
    if error.code == "context_length_exceeded":
        return Decision.CONTEXT_WINDOW
    if error.code in _CONTENT_POLICY_CODES:
        return Decision.FINAL
    if error.status in _RETRY_STATUSES or error.status >= 500:
        return Decision.RETRY
    if error.status in _DEPLOYMENT_STATUSES:
        return Decision.NEXT
    return Decision.FINAL


CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one deployment, for logs, headers and the final error."""

    deployment: str
    outcome: str
    status: int
    latency_ms: float


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    label: str,
    policy: RetrySettings,
    deadline: float,
    attempts: list[Attempt],
    give_up: Callable[[], bool] | None = None,
) -> T:
    """Run `call` against one deployment, retrying what `classify` says to retry.

    Never retries sooner than the backend's Retry-After; a Retry-After longer than
    `policy.max_retry_after`, or a wait that would overrun `deadline` (event-loop time),
    ends this deployment's turn instead, as does `give_up()` turning true (its breaker
    opened). The last failure is re-raised.

    The first try is made directly: building a tenacity controller costs ~25 µs, which the
    common path (first try succeeds) should not pay. A retryable first failure is replayed
    to tenacity as its first outcome, so tenacity decides every retry as if it had made
    that call itself.
    """

    def retryable(exc: BaseException) -> bool:
        if not isinstance(exc, UpstreamError) or classify(exc) is not Decision.RETRY:
            return False
        if give_up is not None and give_up():
            return False
        return exc.retry_after is None or exc.retry_after <= policy.max_retry_after

    async def timed_call() -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except UpstreamError as exc:
            attempts.append(Attempt(label, exc.summary(), exc.status, _ms(started)))
            raise
        except asyncio.CancelledError:
            attempts.append(Attempt(label, CANCELLED, 499, _ms(started)))
            raise
        attempts.append(Attempt(label, "ok", 200, _ms(started)))
        return result

    try:
        return await timed_call()
    except UpstreamError as exc:
        if policy.attempts == 1 or not retryable(exc):
            raise
        replay: UpstreamError | None = exc

    loop = asyncio.get_running_loop()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | _StopAtDeadline(loop, deadline),
        wait=_RetryAfterWait(
            wait_exponential_jitter(
                multiplier=policy.backoff_initial,
                max=policy.backoff_max,
                jitter=policy.backoff_initial,
            )
        ),
        retry=retry_if_exception(retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if replay is not None:
                first, replay = replay, None
                raise first
            return await timed_call()
    raise AssertionError("tenacity ended without an outcome")  # pragma: no cover


class _RetryAfterWait(wait_base):
    """Exponential backoff with jitter, but never shorter than the backend asked."""

    def __init__(self, backoff: wait_base) -> None:
        self._backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self._backoff(retry_state)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, UpstreamError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


class _StopAtDeadline(stop_base):
    """Give up on this deployment when the next wait would end past the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._loop = loop
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._loop.time() + retry_state.upcoming_sleep >= self._deadline


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
