"""policies.retry: what each failure means for the plan, and retrying one deployment
(`call_with_retries`) against a scripted async callable."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from policies.config import RetrySettings
from policies.retry import Attempt, Decision, call_with_retries, classify
from providers.errors import Failure, UpstreamError

FAST = RetrySettings(attempts=3, backoff_initial=0.01, backoff_max=0.02, max_retry_after=30)


def status_error(
    status: int, *, code: str | None = None, retry_after: float | None = None
) -> UpstreamError:
    return UpstreamError(
        f"HTTP {status}",
        failure=Failure.STATUS,
        status=status,
        type="server_error" if status >= 500 else "invalid_request_error",
        code=code,
        retry_after=retry_after,
    )


class Script:
    """An async callable that raises (or returns) the scripted outcomes in order and
    records when each call started (time.monotonic())."""

    def __init__(self, *outcomes: UpstreamError | Exception | str) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        await asyncio.sleep(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def run(
    script: Callable[[], object],
    policy: RetrySettings = FAST,
    *,
    deadline_in: float = 30.0,
    attempts: list[Attempt] | None = None,
) -> object:
    loop = asyncio.get_running_loop()
    return await call_with_retries(
        script,  # type: ignore[arg-type]
        label="prov/model-x",
        policy=policy,
        deadline=loop.time() + deadline_in,
        attempts=[] if attempts is None else attempts,
    )


# ---- classify ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (UpstreamError.connect("refused"), Decision.RETRY),
        (UpstreamError.stream_broken("reset before the first chunk"), Decision.RETRY),
        (UpstreamError.timeout("no first byte"), Decision.NEXT),
        (UpstreamError.protocol("not JSON"), Decision.NEXT),
        (status_error(408), Decision.RETRY),
        (status_error(409), Decision.RETRY),
        (status_error(429), Decision.RETRY),
        (status_error(429, retry_after=2.0), Decision.RETRY),
        (status_error(500), Decision.RETRY),
        (status_error(502), Decision.RETRY),
        (status_error(503), Decision.RETRY),
        (status_error(504), Decision.RETRY),
        (status_error(529), Decision.RETRY),
        (status_error(401), Decision.NEXT),
        (status_error(403), Decision.NEXT),
        (status_error(404), Decision.NEXT),
        (status_error(400), Decision.FINAL),
        (status_error(413), Decision.FINAL),
        (status_error(422), Decision.FINAL),
        (status_error(400, code="context_length_exceeded"), Decision.CONTEXT_WINDOW),
        (status_error(400, code="content_policy_violation"), Decision.FINAL),
        (status_error(400, code="content_filter"), Decision.FINAL),
    ],
    ids=lambda v: v.summary() if isinstance(v, UpstreamError) else None,
)
def test_classify(error: UpstreamError, decision: Decision) -> None:
    assert classify(error) is decision


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(status: int) -> None:
    assert classify(status_error(status)) is not Decision.RETRY


# ---- call_with_retries -------------------------------------------------------------------


async def test_success_first_time_records_one_ok_attempt() -> None:
    attempts: list[Attempt] = []
    script = Script("answer")
    assert await run(script, attempts=attempts) == "answer"
    assert len(script.calls) == 1
    assert [(a.deployment, a.outcome, a.status) for a in attempts] == [("prov/model-x", "ok", 200)]
    assert attempts[0].latency_ms >= 0


async def test_retryable_failures_are_retried_until_success() -> None:
    attempts: list[Attempt] = []
    script = Script(status_error(503), UpstreamError.connect("refused"), "answer")
    assert await run(script, attempts=attempts) == "answer"
    assert len(script.calls) == 3
    assert [a.status for a in attempts] == [503, 502, 200]
    assert attempts[0].outcome == "503 server_error"
    assert attempts[1].outcome.startswith("connect: refused")
    assert attempts[2].outcome == "ok"


@pytest.mark.parametrize("tries", [1, 2, 4])
async def test_stops_after_the_configured_attempts_and_reraises_the_last(tries: int) -> None:
    attempts: list[Attempt] = []
    errors = [status_error(500 + i) for i in range(tries + 2)]
    script = Script(*errors)
    policy = FAST.model_copy(update={"attempts": tries})
    with pytest.raises(UpstreamError) as caught:
        await run(script, policy, attempts=attempts)
    assert len(script.calls) == tries
    assert caught.value is errors[tries - 1]
    assert [a.status for a in attempts] == [500 + i for i in range(tries)]


@pytest.mark.parametrize(
    "error",
    [
        status_error(400),
        status_error(401),
        status_error(403),
        status_error(404),
        status_error(400, code="context_length_exceeded"),
        status_error(400, code="content_policy_violation"),
        UpstreamError.timeout("no first byte"),
        UpstreamError.protocol("not JSON"),
    ],
    ids=lambda e: e.summary(),
)
async def test_non_retryable_failures_are_tried_once(error: UpstreamError) -> None:
    attempts: list[Attempt] = []
    script = Script(error, "answer")
    with pytest.raises(UpstreamError) as caught:
        await run(script, attempts=attempts)
    assert caught.value is error
    assert len(script.calls) == 1
    assert len(attempts) == 1


async def test_other_exceptions_propagate_without_retry() -> None:
    script = Script(ValueError("a bug"), "answer")
    with pytest.raises(ValueError, match="a bug"):
        await run(script)
    assert len(script.calls) == 1


async def test_retry_after_is_a_lower_bound_on_the_wait() -> None:
    script = Script(status_error(429, retry_after=0.4), status_error(503, retry_after=0.3), "ok")
    assert await run(script) == "ok"
    first_gap = script.calls[1] - script.calls[0]
    second_gap = script.calls[2] - script.calls[1]
    assert first_gap >= 0.38  # a little slack for clock granularity, never retries sooner
    assert second_gap >= 0.28


async def test_backoff_grows_exponentially() -> None:
    policy = RetrySettings(attempts=3, backoff_initial=0.1, backoff_max=5, max_retry_after=30)
    script = Script(status_error(503), status_error(503), "ok")
    assert await run(script, policy) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(script.calls)]
    assert gaps[0] >= 0.095  # initial * 2**0
    assert gaps[1] >= 0.195  # initial * 2**1


async def test_backoff_is_capped_by_backoff_max_but_retry_after_is_not() -> None:
    policy = RetrySettings(attempts=2, backoff_initial=0.01, backoff_max=0.01, max_retry_after=30)
    script = Script(status_error(429, retry_after=0.3), "ok")
    assert await run(script, policy) == "ok"
    assert script.calls[1] - script.calls[0] >= 0.28


async def test_retry_after_longer_than_max_retry_after_ends_the_turn_at_once() -> None:
    policy = FAST.model_copy(update={"max_retry_after": 1.0})
    error = status_error(429, retry_after=5.0)
    script = Script(error, "ok")
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await run(script, policy)
    assert caught.value is error
    assert len(script.calls) == 1
    assert time.monotonic() - started < 1.0  # it did not sit out the 5 s


async def test_retry_after_equal_to_max_retry_after_is_waited_for() -> None:
    policy = FAST.model_copy(update={"max_retry_after": 0.2})
    script = Script(status_error(429, retry_after=0.2), "ok")
    assert await run(script, policy) == "ok"
    assert script.calls[1] - script.calls[0] >= 0.18


async def test_a_wait_that_would_pass_the_deadline_gives_up() -> None:
    attempts: list[Attempt] = []
    error = status_error(429, retry_after=3.0)
    script = Script(error, "ok")
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await run(script, deadline_in=0.5, attempts=attempts)
    assert caught.value is error
    assert len(script.calls) == 1
    assert len(attempts) == 1
    assert time.monotonic() - started < 2.0  # it did not sleep 3 s


async def test_a_backoff_that_would_pass_the_deadline_gives_up() -> None:
    # Waits are initial * 2**n plus up to `initial` of jitter: 0.2-0.4, 0.4-0.6, 0.8-1.0 s.
    # The first two end by 1.0 s, inside the deadline; the third cannot end before 1.4 s.
    policy = RetrySettings(attempts=5, backoff_initial=0.2, backoff_max=5, max_retry_after=30)
    script = Script(status_error(503))
    with pytest.raises(UpstreamError):
        await run(script, policy, deadline_in=1.3)
    assert len(script.calls) == 3


async def test_a_past_deadline_allows_no_retry() -> None:
    script = Script(status_error(503), "ok")
    with pytest.raises(UpstreamError):
        await run(script, deadline_in=-1.0)
    assert len(script.calls) == 1
