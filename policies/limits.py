"""Requests per minute, tokens per minute, token and dollar budgets, per key, per team and
(budgets only) per model.

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

Dollar budgets (`budget_usd`) are held exactly as token budgets are, counted in whole
nano-dollars: checked for being overdrawn from the headers; once the body is parsed and
routed, the request's estimated cost (policies/pricing/estimate.py: its estimated tokens
at the dearest price its plan may reach, for every upstream call) is reserved against
every dollar budget that applies, the key's, the team's and the routed model's (a
model's budgets are taken only then: `models.<m>.limits`); `cover` tops it up for a
fallback or hedge that makes more calls; the request settles on its real cost
(`RequestCost.nanos`, every billed call of every attempt), however it ended. A cost
partly unknown (a call to an unpriced deployment) settles on no less than the estimate:
never as $0.

Here: the `Limiter`, which admits, covers, settles and releases. The estimate is
policies/token_estimate.py's; the limits a caller's settings define and a request's
`Reservation`, policies/limit_set.py's; the 429s, the 503 and the headers,
policies/limit_responses.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policies.concurrency import DEFAULT_LEASE_S, SlotLease, slot_limits, too_many_in_flight
from policies.deferred import Deferred
from policies.errors import ApiError
from policies.limit_responses import rate_limit_headers, too_many, unavailable
from policies.limit_set import Reservation, Unit, budget_limits, headroom, scope_limits
from policies.policy_config import ModelLimitSettings
from policies.pricing.cost import RequestCost
from policies.state.base import Admission, Limit, StateStore, StateUnavailable
from policies.teams import Caller
from policies.token_estimate import estimate_tokens

Clock = Callable[[], float]
# The nano-dollars to reserve, asked only where a dollar budget applies (pricing the
# estimate is work no other request should do); may raise the request's refusal.
NanosEstimate = Callable[[], int]


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

    def limits_for(self, caller: Caller, now: float) -> list[tuple[Limit, Unit]]:
        result: list[tuple[Limit, Unit]] = []
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
        model: tuple[str, ModelLimitSettings | None] | None = None,
        nanos: NanosEstimate | None = None,
        also_models: Sequence[tuple[str, ModelLimitSettings | None]] = (),
    ) -> Reservation | None:
        """Both steps at once, for a caller that has the body already."""
        head = await self.admit_request(caller, on_refused, share=share)
        try:
            return await self.admit_tokens(
                head,
                body,
                on_refused,
                prompt_reads=prompt_reads,
                model=model,
                nanos=nanos,
                also_models=also_models,
            )
        except ApiError:
            await self.settle(head, 0)
            await self.release(head)
            raise

    async def admit_request(
        self, caller: Caller, on_refused: Callable[[str, str], None], *, share: float = 1.0
    ) -> Reservation | None:
        """From the headers alone, before the body is read: one request against every
        request limit, and every token and dollar limit checked for being overdrawn
        (nothing is taken from those yet), so a key over a limit is refused before it can
        hold a connection while it sends a body. None: no limits apply, or they could not
        be checked and the request is let through unchecked. Raises the 429 (or 503).
        Then a slot of every concurrency limit (policies/concurrency.py), held until
        `release`; refused, the request is given back to the request limits. `share`:
        of each limit this request may use, leaving the rest to others (module docstring)."""
        now = self._clock()
        reservation = await self._admit_requests(caller, now, on_refused, share)
        if reservation is None and share < 1.0:  # the model's budgets, later, take the share
            reservation = Reservation((), (), 0, (), share=share)
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
                await self._give_back_request(reservation)
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
        units = tuple(unit for _, unit in pairs)
        costs = [1 if unit is Unit.REQUESTS else 0 for unit in units]
        admission = await self._take(limits, costs, now, share)
        if admission is None:
            return None
        reservation = Reservation(limits, units, 0, admission.states, share=share)
        if not admission.allowed:
            raise self._refused(admission, reservation, on_refused)
        return reservation

    async def _give_back_request(self, reservation: Reservation) -> None:
        """The one request `admit_request` counted, given back (the request was refused)."""
        counted = [reservation.limits[i] for i in reservation.counting(Unit.REQUESTS)]
        if counted:
            await self._store.charge(counted, [-1] * len(counted), self._clock())

    async def admit_tokens(
        self,
        head: Reservation | None,
        body: Mapping[str, Any],
        on_refused: Callable[[str, str], None],
        *,
        prompt_reads: int = 1,
        model: tuple[str, ModelLimitSettings | None] | None = None,
        nanos: NanosEstimate | None = None,
        also_models: Sequence[tuple[str, ModelLimitSettings | None]] = (),
    ) -> Reservation | None:
        """The token estimate, and the cost estimate (`nanos`) where a dollar budget
        applies, once the body is parsed and routed, on top of what `admit_request` took
        (the request is counted once, there). `model`: the routed model and its own
        limits (budgets), which join the reservation here; `also_models`: other models
        whose budgets count this request too (router/fan_out_charge.py says which).
        Refused: the request is given back, so a refused request takes nothing from the
        other limits, and the 429 raised."""
        now = self._clock()
        added = [
            pair
            for name, settings in ([model] if model else []) + list(also_models)
            if settings is not None
            for pair in budget_limits(f"model:{name}", settings, now)
        ]
        if head is None and not added:
            return None
        held = head or Reservation((), (), 0, ())
        known = {limit.key for limit in held.limits}
        added = [(limit, unit) for limit, unit in added if limit.key not in known]
        units = held.units + tuple(unit for _, unit in added)
        if Unit.TOKENS not in units and Unit.NANOS not in units:
            return head  # only requests are counted: no estimate to make
        tokens = max(held.reserved_tokens, estimate_tokens(body, prompt_reads))
        cost = held.reserved_nanos
        if nanos is not None and Unit.NANOS in units:
            cost = max(cost, nanos())
        wanted = Reservation(
            held.limits + tuple(limit for limit, _ in added),
            units,
            tokens,
            held.states,
            held.lease,
            held.share,
            cost,
        )
        taking = wanted.counting(Unit.TOKENS, Unit.NANOS)
        # A model's limits, joining here, take the whole estimate; the others, the rest.
        costs = [
            wanted.reserved(units[i]) - (held.reserved(units[i]) if i < len(held.limits) else 0)
            for i in taking
        ]
        if not added and not any(costs):
            return head
        admission = await self._take(
            tuple(wanted.limits[i] for i in taking), costs, now, held.share
        )
        if admission is None:  # unchecked; the request was admitted from the headers
            return head
        by_limit = {state.limit: state for state in admission.states}
        states = [by_limit.get(state.limit, state) for state in held.states]
        wanted.states = tuple(states + [by_limit[limit] for limit, _ in added])
        if not admission.allowed:
            await self._give_back_request(held)
            raise self._refused(admission, wanted, on_refused, requested=True)
        return wanted

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
        requested: bool = False,
    ) -> ApiError:
        """The 429 for the limit that refused; `requested`: whether the reservation's
        tokens and dollars were asked for (what a "request too large" compares)."""
        refused = admission.refused_by
        assert refused is not None
        kind, scope = refused.key.split(":")[:2]
        on_refused(scope, kind)
        unit = reservation.units[reservation.limits.index(refused)]
        asked = reservation.reserved(unit) if requested else None
        return too_many(admission, refused, reservation, asked)

    async def cover(
        self,
        reservation: Reservation | None,
        tokens: int,
        on_refused: Callable[[str, str], None],
        nanos: NanosEstimate | None = None,
    ) -> None:
        """Make `reservation` hold at least `tokens`, and at least `nanos()` of its dollar
        budgets (a fallback deployment whose emulation makes more upstream calls than
        admission reserved for; a hedge beside the calls still running), or raise the 429
        with nothing more taken. Only token and dollar limits are charged: the request is
        counted already."""
        if reservation is None:
            return
        cost = reservation.reserved_nanos
        if nanos is not None and reservation.counting(Unit.NANOS):
            cost = max(cost, nanos())
        wanted = {Unit.TOKENS: max(tokens, reservation.reserved_tokens), Unit.NANOS: cost}
        indices = [
            i
            for i in reservation.counting(Unit.TOKENS, Unit.NANOS)
            if wanted[reservation.units[i]] > reservation.reserved(reservation.units[i])
        ]
        if not indices:
            return
        limits = tuple(reservation.limits[i] for i in indices)
        extra = [
            wanted[unit] - reservation.reserved(unit)
            for unit in (reservation.units[i] for i in indices)
        ]
        admission = await self._take(limits, extra, self._clock(), reservation.share)
        if admission is None:  # unchecked, as admission would have been
            return
        states = list(reservation.states)
        for i, state in zip(indices, admission.states, strict=True):
            states[i] = state
        reservation.states = tuple(states)
        if not admission.allowed:
            asking = Reservation(
                reservation.limits,
                reservation.units,
                wanted[Unit.TOKENS],
                reservation.states,
                share=reservation.share,
                reserved_nanos=wanted[Unit.NANOS],
            )
            raise self._refused(admission, asking, on_refused, requested=True)
        reservation.reserved_tokens = wanted[Unit.TOKENS]
        reservation.reserved_nanos = wanted[Unit.NANOS]

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
        `cost`: what every billed upstream call of the request cost (policies/pricing/),
        which its dollar budgets settle on (None: the estimate stands; a cost partly
        unknown settles on no less than the estimate)."""
        if reservation is None:
            return
        deltas = {
            Unit.TOKENS: _token_delta(reservation, actual_tokens, unsettled),
            Unit.NANOS: _nanos_delta(reservation, cost),
        }
        indices = [
            i for i in reservation.counting(Unit.TOKENS, Unit.NANOS) if deltas[reservation.units[i]]
        ]
        if not indices:
            return
        limits = [reservation.limits[i] for i in indices]
        costs = [deltas[reservation.units[i]] for i in indices]
        await self._store.charge(limits, costs, self._clock())


def _token_delta(reservation: Reservation, actual: int | None, unsettled: int) -> int:
    """Tokens to charge (or give back) to correct the reservation to what was used."""
    if actual is None:
        if unsettled == 0:
            return 0
        actual = reservation.reserved_tokens
    return actual + unsettled - reservation.reserved_tokens


def _nanos_delta(reservation: Reservation, cost: RequestCost | None) -> int:
    """Nano-dollars to charge (or give back) to correct the reservation to the real cost."""
    if cost is None:
        return 0
    spent = cost.nanos if cost.known else max(cost.nanos, reservation.reserved_nanos)
    return spent - reservation.reserved_nanos
