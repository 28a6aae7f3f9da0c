"""What a limited request is answered: OpenAI's `x-ratelimit-*` headers, which every limited
response carries; the 429 of a limit reached (with `Retry-After`) or of a request larger
than the limit itself (without: no wait would let it in); the 503 when limits cannot be
checked."""

from __future__ import annotations

import math

from policies.errors import ApiError
from policies.limit_set import Reservation, Unit, share_of
from policies.policy_config import NANOS_PER_USD
from policies.state.base import Admission, Limit, LimitState

_HEADER_UNITS = (("requests", Unit.REQUESTS), ("tokens", Unit.TOKENS), ("usd", Unit.NANOS))


def rate_limit_headers(reservation: Reservation | None) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers: for requests and for tokens, the limit with the
    least room left among those that apply (token budgets are reported as tokens too);
    Turnout's own `x-ratelimit-*-usd` likewise for dollar budgets, in dollars."""
    if reservation is None:
        return {}
    headers: dict[str, str] = {}
    for kind, unit in _HEADER_UNITS:
        states = [
            s for s, u in zip(reservation.states, reservation.units, strict=True) if u == unit
        ]
        if not states:
            continue
        tightest = min(states, key=lambda s: (s.remaining, -s.reset_s))
        shown = usd if unit is Unit.NANOS else str
        headers[f"x-ratelimit-limit-{kind}"] = shown(tightest.limit.capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = shown(max(0, tightest.remaining))
        headers[f"x-ratelimit-reset-{kind}"] = duration(tightest.reset_s)
    return headers


def usd(nanos: int) -> str:
    """Nano-dollars as dollars, without trailing zeros: `50`, `0.000125`."""
    whole, frac = divmod(nanos, NANOS_PER_USD)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


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
    if kind == "budget_usd":
        return dollars_spent(refused, state, reservation, requested)
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


def dollars_spent(
    refused: Limit, state: LimitState, reservation: Reservation, requested: int | None
) -> ApiError:
    """A dollar budget's 429: spent until its period ends (`Retry-After` says when), or
    the request's estimate alone is more than the budget allows it (no wait helps). The
    message names the budget (whose, period, dollars) by what the caller already knows:
    its key, its team, the model it asked for, never another scope's name."""
    owner, per = _budget_owner(refused.key), refused.key.rsplit(":", 1)[-1]
    usable = refused.capacity
    if reservation.share < 1.0:
        usable = share_of(refused.capacity, reservation.share)
    budget = f"dollar budget of ${usd(refused.capacity)} per {per} for {owner}"
    if requested is not None and requested > usable:
        share = f" (this request's share: ${usd(usable)})" if usable < refused.capacity else ""
        return ApiError(
            f"Request too large for the {budget}{share}: its estimated cost is "
            f"${usd(requested)}. Reduce the prompt, max_tokens or n for the request to run.",
            status=429,
            type="insufficient_quota",
            code="budget_exceeded",
            headers=rate_limit_headers(reservation),
        )
    retry = max(1, math.ceil(state.retry_after_s))
    return ApiError(
        f"The {budget} is spent (${usd(max(0, state.remaining))} left) until the period "
        f"resets in {duration(state.reset_s)}.",
        status=429,
        type="insufficient_quota",
        code="budget_exceeded",
        headers={"retry-after": str(retry), **rate_limit_headers(reservation)},
    )


def _budget_owner(key: str) -> str:
    """`budget_usd:<scope>:<name>:<per>` as words: `this key`, `this team`, `model `m``
    (a model's name may hold colons)."""
    scope = key.split(":")[1]
    if scope == "model":
        return f"model `{key.split(':', 2)[2].rsplit(':', 1)[0]}`"
    return f"this {scope}"
