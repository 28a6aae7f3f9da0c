"""What a client gets when a walk through its plan ends with no answer: no deployment could
honour the request, every breaker was open, or every attempt failed."""

from __future__ import annotations

from collections.abc import Sequence

from policies.errors import ApiError
from policies.health import Health
from policies.plan import Target
from policies.redaction import Redactor
from policies.retry import Attempt
from policies.translation import Refusal
from providers.errors import Failure, UpstreamError


def refused(refusals: list[tuple[str, Refusal]]) -> ApiError:
    """No deployment can honour the request: name the first option that stood in the way."""
    _, first = refusals[0]
    where = "; ".join(f"{label}: {refusal.message}" for label, refusal in refusals)
    if first.param == "model":
        return ApiError(
            f"No deployment of this model serves this endpoint ({where}).",
            param="model",
            code="unsupported_endpoint",
        )
    hint = (
        ' Send {"router": {"translation": "drop"}} to drop what a deployment cannot do.'
        if first.droppable
        else ""
    )
    return ApiError(
        f"`{first.param}` cannot be honoured by any deployment of this model ({where}).{hint}",
        param=first.param,
        code="unsupported_parameter",
    )


def breakers_open(open_breakers: list[tuple[str, float]], health: Health | None) -> UpstreamError:
    now = health.now() if health is not None else 0.0
    wait = max(0.0, min(until for _, until in open_breakers) - now)
    which = ", ".join(label for label, _ in open_breakers)
    return UpstreamError(
        f"Every deployment that could serve this request is unavailable: circuit breaker "
        f"open ({which}). Retry in {wait:.1f}s.",
        failure=Failure.PROTOCOL,
        status=503,
        type="server_error",
        code="deployments_unavailable",
        retry_after=max(1.0, round(wait, 1)),
    )


def exhausted(
    last: UpstreamError | None,
    attempts: Sequence[Attempt],
    target: Target | None,
    redactor: Redactor,
) -> UpstreamError:
    """One error that says what every attempt got, with the last failure's status and type
    (`target`: the deployment that gave it); each attempt's outcome masked for the client
    with its own deployment's label."""
    if last is None:  # an empty plan cannot be configured; kept for a clear message anyway
        return UpstreamError(
            "no deployment to try", failure=Failure.PROTOCOL, status=503, type="server_error"
        )
    public = redactor.public(last, public_label(target))
    said = "; ".join(f"{a.deployment}: {a.outcome}" for a in attempts) or "none"
    shown = (
        "; ".join(
            f"{a.deployment}: {redactor.for_client(a.outcome, a.deployment)}" for a in attempts
        )
        or "none"
    )
    failed = f"all deployments failed after {len(attempts)} attempt(s)"
    return UpstreamError(
        f"{public.message} ({failed}: {shown})",
        failure=last.failure,
        status=last.status,
        type=public.type,
        code=public.code,
        param=public.param,
        retry_after=last.retry_after,
        detail=redactor.for_log(f"{last.detail or last.message} ({failed}: {said})"),
    )


def public_label(target: Target | None) -> str:
    """The public name an internal address is replaced with."""
    return target.label if target is not None else "upstream"
