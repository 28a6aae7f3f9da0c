"""What a limited request is answered: OpenAI's `x-ratelimit-*` headers, which every limited
response carries; the 429 of a limit reached (with `Retry-After`) or of a request larger
than the limit itself (without: no wait would let it in); the 503 when limits cannot be
checked."""

from __future__ import annotations

import math

from policies.errors import ApiError
from policies.limit_set import Reservation, share_of
from policies.state.base import Admission, Limit


def rate_limit_headers(reservation: Reservation | None) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers: for requests and for tokens, the limit with the
    least room left among those that apply (budgets are reported as tokens too)."""
    if reservation is None:
        return {}
    headers: dict[str, str] = {}
    for kind, want_tokens in (("requests", False), ("tokens", True)):
        states = [
            s
            for s, t in zip(reservation.states, reservation.token_limits, strict=True)
            if t == want_tokens
        ]
        if not states:
            continue
        tightest = min(states, key=lambda s: (s.remaining, -s.reset_s))
        headers[f"x-ratelimit-limit-{kind}"] = str(tightest.limit.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, tightest.remaining))
        headers[f"x-ratelimit-reset-{kind}"] = duration(tightest.reset_s)
    return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def unavailable() -> ApiError:
    return ApiError(
        "Rate limits cannot be checked right now (the shared state store is unreachable). "
        "Try again in 1s.",
        status=503,
        type="server_error",
        code="state_unavailable",
        headers={"retry-after": "1"},
    )


def too_many(
    admission: Admission, refused: Limit, reservation: Reservation, requested: int | None
) -> ApiError:
    state = next(s for s in admission.states if s.limit is refused)
    kind = refused.key.split(":")[0]
    scope = refused.key.split(":")[1]
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "budget": "token budget"}
    # A request held to a share of the limit never fits past that share: no wait would help.
    usable, label = refused.capacity, what.get(kind, kind)
    if reservation.share < 1.0:
        usable = share_of(refused.capacity, reservation.share)
        label += f" (this request's share of {refused.capacity})"
    if requested is not None and requested > usable:
        return too_large(label, scope, usable, requested, reservation)
    retry = max(1, math.ceil(state.retry_after_s))
    message = (
        f"Rate limit reached for {what.get(kind, kind)} on this {scope}: limit "
        f"{refused.capacity}, remaining {max(0, state.remaining)}. Try again in {retry}s."
    )
    if kind == "budget":
        message = (
            f"Token budget of {refused.capacity} for this {scope} is used up until the period "
            f"resets in {duration(state.reset_s)}."
        )
    return ApiError(
        message,
        status=429,
        type="requests" if kind == "rpm" else "tokens",
        code="rate_limit_exceeded",
        headers={"retry-after": str(retry), **rate_limit_headers(reservation)},
    )


def too_large(
    what: str, scope: str, capacity: int, requested: int, reservation: Reservation
) -> ApiError:
    """A request larger than the limit itself can never be admitted: OpenAI's 429 for it,
    with no `Retry-After`, since waiting would not help."""
    return ApiError(
        f"Request too large for {what} on this {scope}: Limit {capacity}, Requested "
        f"{requested}. The input or output tokens must be reduced (a smaller prompt, "
        "max_tokens or n) for the request to run.",
        status=429,
        type="tokens",
        code="rate_limit_exceeded",
        headers=rate_limit_headers(reservation),
    )
