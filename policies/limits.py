"""Requests per minute, tokens per minute and token budgets, per key and per team.

Admission happens before any backend is called, in two atomic steps. From the headers,
before any byte of the body is read (`admit_request`): one request against every request
limit, and every token limit checked for being overdrawn, so a caller already over a limit
is refused without holding a connection while it sends a body. Once the body is parsed
(`admit_tokens`): the token estimate (estimated prompt tokens plus the
completion tokens the request allows: `max_tokens`/`max_completion_tokens`, or 256 for a
chat without one, times `n`). Once the response is known, the estimate is corrected to
the true count (for a stream: its usage, which Turnout asks the backend for; else an
estimate from the streamed text); a request that ends without an answer still counts
as a request and settles on the upstream calls it made (policies/call_cost.py: the usage
of those that finished, the estimate of those cut once sent; nothing when none was
made). A request refused by one limit takes nothing from the others.

Emulations that make several upstream calls (`n` or `best_of` fanned out on a backend
without them) are charged for every call: each reads the whole prompt, so the estimate
counts the prompt once per call (`prompt_reads`) for the first deployment able to serve
the request; a fallback deployment that needs more calls first reserves the difference
(`Limiter.cover`) or the request is refused with the 429. Settling uses the usage summed
over every call, prompt included each time.

Rate limits are token buckets refilled continuously (a full minute's allowance at most);
budgets are fixed calendar periods in UTC. Over a limit: 429 in OpenAI's envelope with
`Retry-After` and OpenAI's `x-ratelimit-*` headers, which every limited response carries;
a request larger than the limit itself gets OpenAI's "Request too large" 429 without
`Retry-After`, since no wait would let it in.

A request may be held to a `share` of every limit (`admit_request(..., share=0.5)`; a
batch line, so that it only takes what live traffic leaves): it is admitted only while,
after its cost, the rest of each limit (`limit_set.headroom`) is still left, and it may
take a concurrency slot only while fewer than its share of the slots are held. Its
`Reservation` keeps the share, so its tokens and `cover` are held to the same; its 429's
`Retry-After` is when its cost and that rest would both fit.

With the shared store unreachable, limits cannot be checked: `state.limits_when_unavailable`
says whether to admit the request unchecked (`allow`, the default: no reservation, no
headers) or to answer 503 `state_unavailable` with `Retry-After: 1` (`refuse`).

Here: the `Limiter`, which admits, covers, settles and releases. The estimate is
policies/token_estimate.py's; the limits a caller's settings define and a request's
`Reservation`, policies/limit_set.py's; the 429s, the 503 and the headers,
policies/limit_responses.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.concurrency import DEFAULT_LEASE_S, SlotLease, slot_limits, too_many_in_flight
from policies.deferred import Deferred
from policies.errors import ApiError
from policies.limit_responses import rate_limit_headers, too_many, unavailable
from policies.limit_set import Reservation, headroom, scope_limits
from policies.pricing.cost import RequestCost
from policies.state.base import Admission, Limit, StateStore, StateUnavailable
from policies.teams import Caller
from policies.token_estimate import estimate_tokens

Clock = Callable[[], float]


class Limiter:
    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        deferred: Deferred | None = None,
        *,
        refuse_when_unavailable: bool = False,
        slot_lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self._slot_lease_s = slot_lease_s
        self._store = store
        self._clock = clock
        self._deferred = deferred or Deferred(immediate=True)
        self._refuse_when_unavailable = refuse_when_unavailable

    def limits_for(self, caller: Caller, now: float) -> list[tuple[Limit, bool]]:
        result: list[tuple[Limit, bool]] = []
        scopes = [(f"key:{caller.key_id}", caller.key_limits)]
        if caller.team_settings is not None:
            scopes.append((f"team:{caller.team}", caller.team_settings.limits))
        for scope, settings in scopes:
            if settings is not None:
                result.extend(scope_limits(scope, settings, now))
        return result

    async def admit(
        self,
        caller: Caller,
        body: Mapping[str, Any],
        on_refused: Callable[[str, str], None],
        *,
        prompt_reads: int = 1,
        share: float = 1.0,
    ) -> Reservation | None:
        """Both steps at once, for a caller that has the body already."""
        head = await self.admit_request(caller, on_refused, share=share)
        try:
            return await self.admit_tokens(head, body, on_refused, prompt_reads=prompt_reads)
        except ApiError:
            await self.settle(head, 0)
            await self.release(head)
            raise

    async def admit_request(
        self, caller: Caller, on_refused: Callable[[str, str], None], *, share: float = 1.0
    ) -> Reservation | None:
        """From the headers alone, before the body is read: one request against every
        request limit, and every token limit checked for being overdrawn (nothing is
        taken from those yet), so a key over a limit is refused before it can hold a
        connection while it sends a body. None: no limits apply, or they could not be
        checked and the request is let through unchecked. Raises the 429 (or 503).
        Then a slot of every concurrency limit (policies/concurrency.py), held until
        `release`; refused, the request is given back to the request limits. `share`:
        of each limit this request may use, leaving the rest to others (module docstring)."""
        now = self._clock()
        reservation = await self._admit_requests(caller, now, on_refused, share)
        slots = slot_limits(caller, self._slot_lease_s)
        if not slots:
            return reservation
        lease = SlotLease.new(slots)
        admission = await self._take_slots(lease, now, share)
        if admission is None:
            return reservation
        if not admission.allowed:
            assert admission.refused_by is not None
            if reservation is not None:  # a refused request takes nothing from the others
                pairs = zip(reservation.limits, reservation.token_limits, strict=True)
                counted = [limit for limit, tokens in pairs if not tokens]
                await self._store.charge(counted, [-1] * len(counted), self._clock())
            on_refused(admission.refused_by.key.split(":")[1], "concurrency")
            raise too_many_in_flight(admission.refused_by, rate_limit_headers(reservation))
        reservation = reservation or Reservation((), (), 0, (), share=share)
        reservation.lease = lease
        return reservation

    async def release(self, reservation: Reservation | None) -> None:
        """Give back the request's concurrency slots, once (every end may call it)."""
        lease = reservation.lease if reservation is not None else None
        if lease is None or lease.released:
            return
        lease.released = True
        # Deferred (a task of its own with a shared store): a stream's end runs inside the
        # server's cancelled scope, where any await of a network round trip is cancelled too.
        await self._deferred.run(self._store.release_slots(lease.limits, lease.holder))

    async def _take_slots(self, lease: SlotLease, now: float, share: float) -> Admission | None:
        """As `_take`, for slots: None when the store is unreachable and requests pass."""
        kept = headroom(lease.limits, share)
        try:
            return await self._store.acquire_slots(lease.limits, lease.holder, now, kept)
        except StateUnavailable:  # counted and logged by the store (fail_open.py)
            if self._refuse_when_unavailable:
                raise unavailable() from None
            return None

    async def _admit_requests(
        self, caller: Caller, now: float, on_refused: Callable[[str, str], None], share: float
    ) -> Reservation | None:
        pairs = self.limits_for(caller, now)
        if not pairs:
            return None
        limits = tuple(limit for limit, _ in pairs)
        is_tokens = tuple(t for _, t in pairs)
        admission = await self._take(limits, [0 if t else 1 for t in is_tokens], now, share)
        if admission is None:
            return None
        reservation = Reservation(limits, is_tokens, 0, admission.states, share=share)
        if not admission.allowed:
            raise self._refused(admission, reservation, on_refused)
        return reservation

    async def admit_tokens(
        self,
        head: Reservation | None,
        body: Mapping[str, Any],
        on_refused: Callable[[str, str], None],
        *,
        prompt_reads: int = 1,
    ) -> Reservation | None:
        """The token estimate, once the body is parsed, on top of what `admit_request`
        took (the request is counted once, there). Refused: the request is given back,
        so a refused request takes nothing from the other limits, and the 429 raised."""
        if head is None or not any(head.token_limits):
            return head
        extra = max(0, estimate_tokens(body, prompt_reads) - head.reserved_tokens)
        if extra == 0:
            return head
        token_limits = tuple(
            lim for lim, t in zip(head.limits, head.token_limits, strict=True) if t
        )
        costs = [extra] * len(token_limits)
        admission = await self._take(token_limits, costs, self._clock(), head.share)
        if admission is None:  # tokens unchecked; the request was admitted from the headers
            return head
        by_limit = {state.limit: state for state in admission.states}
        reservation = Reservation(
            head.limits,
            head.token_limits,
            head.reserved_tokens + extra,
            tuple(by_limit.get(state.limit, state) for state in head.states),
            head.lease,
            head.share,
        )
        if not admission.allowed:
            requests = [lim for lim, t in zip(head.limits, head.token_limits, strict=True) if not t]
            if requests:
                await self._store.charge(requests, [-1] * len(requests), self._clock())
            raise self._refused(admission, reservation, on_refused, reservation.reserved_tokens)
        return reservation

    async def _take(
        self, limits: tuple[Limit, ...], costs: list[int], now: float, share: float
    ) -> Admission | None:
        """The store's admission; None when it is unreachable and requests are let through."""
        kept = headroom(limits, share)
        try:
            return await self._store.admit(limits, costs, now, kept)
        except StateUnavailable:  # counted and logged by the store (fail_open.py)
            if self._refuse_when_unavailable:
                raise unavailable() from None
            return None

    @staticmethod
    def _refused(
        admission: Admission,
        reservation: Reservation,
        on_refused: Callable[[str, str], None],
        requested: int | None = None,
    ) -> ApiError:
        """The 429 for the limit that refused; `requested`: the tokens asked for."""
        refused = admission.refused_by
        assert refused is not None
        kind, scope = refused.key.split(":")[:2]
        on_refused(scope, kind)
        return too_many(admission, refused, reservation, requested)

    async def cover(
        self,
        reservation: Reservation | None,
        tokens: int,
        on_refused: Callable[[str, str], None],
    ) -> None:
        """Make `reservation` hold at least `tokens` (a fallback deployment whose emulation
        makes more upstream calls than admission reserved for), or raise the 429 with
        nothing more taken. Only token limits are charged: the request is counted already."""
        if reservation is None or tokens <= reservation.reserved_tokens:
            return
        indices = [i for i, t in enumerate(reservation.token_limits) if t]
        if not indices:
            return
        extra = tokens - reservation.reserved_tokens
        limits = tuple(reservation.limits[i] for i in indices)
        admission = await self._take(
            limits, [extra] * len(limits), self._clock(), reservation.share
        )
        if admission is None:  # unchecked, as admission would have been
            return
        states = list(reservation.states)
        for i, state in zip(indices, admission.states, strict=True):
            states[i] = state
        reservation.states = tuple(states)
        if not admission.allowed:
            raise self._refused(admission, reservation, on_refused, tokens)
        reservation.reserved_tokens = tokens

    async def settle(
        self,
        reservation: Reservation | None,
        actual_tokens: int | None,
        unsettled: int = 0,
        *,
        cost: RequestCost | None = None,
    ) -> None:
        """Correct the token estimate to what the response used (None: not known, the
        estimate stands for it), plus `unsettled`: the tokens of upstream calls no answer
        accounts for (policies/call_cost.py). A request that failed or was cut off after
        calling upstreams settles on those (`actual_tokens` 0): never on nothing.
        `cost`: what every billed upstream call of the request cost (policies/pricing/)."""
        if reservation is None:
            return
        if actual_tokens is None:
            if unsettled == 0:
                return
            actual_tokens = reservation.reserved_tokens
        actual_tokens += unsettled
        delta = actual_tokens - reservation.reserved_tokens
        if delta == 0 or not any(reservation.token_limits):
            return
        pairs = [
            (lim, delta)
            for lim, t in zip(reservation.limits, reservation.token_limits, strict=True)
            if t
        ]
        await self._store.charge([p[0] for p in pairs], [p[1] for p in pairs], self._clock())
