"""The one request pipeline every front door calls.

A front door (the OpenAI endpoints over HTTP, a batch line, later other wire shapes)
turns what it received into a caller, an endpoint and an OpenAI-shaped body, and hands
them here: admission against the caller's limits, validation, routing (team rules, plan),
the reservation of every upstream call, the response cache, dispatch (retries, breakers,
fallbacks, hedges), settlement of the limits and the accounting (log line, metrics). What
comes back is the answer's bytes, or an error already settled, logged and put in OpenAI's
envelope, for the door to frame in its own wire shape.

A door that streams takes the prepared request (`prepare`) and relays the dispatcher's
stream itself (router/endpoints.py): the settlement then happens at the stream's end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from policies.call_cost import unsettled_tokens, usage_parts
from policies.errors import ApiError
from policies.limit_set import Reservation
from policies.native import NativeRequest
from policies.pricing.cost import RequestCost, request_cost
from policies.teams import Caller
from policies.trace import Trace
from policies.translation import Refusal
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import RequestRecord
from router.body import validate
from router.errors import envelope, upstream_headers
from router.fan_out_charge import admit_every_call
from router.gateway import Gateway, PolicyObserver
from router.request_span import begin_server_span
from router.response_cache import CachedAnswer
from router.routing_options import routing_choices
from router.schemas.common import OpenAIRequest, forwardable

T = TypeVar("T")
Guard = Callable[[Awaitable[Any]], Awaitable[Any]]


async def _unguarded(work: Awaitable[T]) -> T:
    return await work


@dataclass(frozen=True, slots=True)
class Failure:
    """An error answer, settled and logged: its status, envelope and headers."""

    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class PipelineRun:
    """One request's way through the pipeline; a door makes one per request (`begin`).

    `share`: the share of each of the caller's limits this request may use (a batch line
    takes only what live requests leave: `batches.limit_share`). `background`: a batch
    line, which waits behind live requests on a local sampler."""

    gateway: Gateway
    record: RequestRecord
    observer: PolicyObserver
    endpoint: Endpoint
    share: float = 1.0
    background: bool = False
    reservation: Reservation | None = None
    streaming: bool = False  # a stream handed over gives back its slots at its own end
    extra_log: dict[str, Any] = field(default_factory=dict)  # e.g. the batch a line is of

    @classmethod
    def begin(
        cls,
        gateway: Gateway,
        observer: PolicyObserver,
        endpoint: Endpoint,
        incoming_id: str | None,
        *,
        label: str | None = None,
        **options: Any,
    ) -> PipelineRun:
        """`label`: the door's name for the request in logs and metrics (default: the
        endpoint's), e.g. `responses` for a Responses API request run as a chat."""
        metrics: Any = observer
        record = RequestRecord.begin(
            label or endpoint.value,
            incoming_id,
            gateway.new_request_id,
            metrics=metrics,
            in_flight=gateway,
            redactor=gateway.redactor,
            spend=gateway.spend,
        )
        return cls(gateway, record, observer, endpoint, **options)

    async def admit(self, caller: Caller) -> None:
        """The caller's request limits and concurrency slots, from the caller alone (before
        a door reads the body: a refused key holds no connection while it sends one)."""
        self.record.caller = caller
        self.reservation = await self.gateway.limiter.admit_request(
            caller, self.observer.limit_rejected, share=self.share
        )

    async def prepare(
        self,
        schema: type[OpenAIRequest],
        body: dict[str, Any],
        headers: Mapping[str, str],
        *,
        native: NativeRequest | None = None,
        chat_refusal: Refusal | None = None,
    ) -> dict[str, Any]:
        """Validate, route and reserve every upstream call; the body to forward.
        `native`: a door's request as the client sent it (Responses, Anthropic Messages),
        for the deployments that take it natively (policies/native.py; `chat_refusal`: why
        `body` falls short of it, which every other deployment then refuses with)."""
        record, gateway = self.record, self.gateway
        caller = record.caller
        assert caller is not None  # `admit` came first
        record.model = body.get("model") if isinstance(body.get("model"), str) else None
        if gateway.tracing is not None:  # its server span (a client's traceparent continued)
            begin_server_span(gateway, record, self.endpoint, body, headers)
        parsed = validate(schema, body)
        route = record.route = gateway.router.route(caller, body, headers, routing_choices(parsed))
        record.trace = gateway.dispatcher.start_trace(
            route.plan, background=self.background, native=native, chat_refusal=chat_refusal
        )
        record.trace.spans = record.spans  # traced: a span per upstream attempt too
        forward = forwardable(body)
        self.reservation = await admit_every_call(
            gateway, self.reservation, record, self.endpoint, forward, self.observer.limit_rejected
        )
        return forward

    async def answer(
        self, forward: dict[str, Any], cache_options: Any, guard: Guard = _unguarded
    ) -> tuple[bytes, dict[str, str]]:
        """The whole answer (from the cache, or dispatched), settled and logged: its bytes
        and the headers that say who answered. `guard` wraps the dispatch (the HTTP door
        cancels it when its client goes away). Errors propagate for `fail`."""
        gateway, record = self.gateway, self.record
        route, trace = record.route, record.trace
        assert route is not None  # set by `prepare`
        assert trace is not None
        # A door's request with a native form may be answered in the native shape: its
        # entries are kept apart from plain chat's (a chat client never gets a Response).
        keyed = trace.native.endpoint if trace.native is not None else self.endpoint
        # Keyed on what the client sent too: two requests the chat form cannot tell apart
        # (thinking budgets, beta headers) are sent apart to a native deployment.
        key_body = forward if trace.native is None else {**forward, **trace.native.key}
        cached = CachedAnswer.choose(gateway, record, keyed, key_body, cache_options)
        if cached is not None and (hit := await cached.lookup(record, self.observer)) is not None:
            record.cost = RequestCost()  # no upstream call was made
            await gateway.limiter.settle(self.reservation, 0, cost=record.cost)
            record.emit(200, outcome="cache_hit", **self.extra_log)
            return hit, record.headers()
        answer = await guard(gateway.dispatcher.complete(route.plan, self.endpoint, forward, trace))
        result: JSONObject = answer.body
        if trace.target is not None and "model" not in result:
            result["model"] = trace.target.deployment.model
        usage = result.get("usage")
        cost = priced(gateway, record, usage)
        await gateway.limiter.settle(
            self.reservation, total_tokens(usage), unsettled(trace), cost=cost
        )
        if cached is not None:
            await cached.store(result, record)
        headers = record.headers()  # before the log line: it records what the client gets
        record.emit(200, usage=usage, **self.extra_log)
        return orjson.dumps(result), headers

    async def fail(self, exc: ApiError | UpstreamError) -> Failure:
        """Settle, log and frame an error: upstream calls already made were billed however
        the request ended; a 499 (the client went away) is no backend's failure."""
        begin_server_span(self.gateway, self.record, self.endpoint, {}, {})  # refused early
        trace = self.record.trace
        cost = priced(self.gateway, self.record)
        await self.gateway.limiter.settle(self.reservation, 0, unsettled(trace), cost=cost)
        if isinstance(exc, ApiError):
            outcome = "client_closed" if exc.status == 499 else "rejected"
            log: dict[str, Any] = {"outcome": outcome, "error": exc.code or exc.type}
            headers = dict(exc.headers)
        else:  # the client gets the masked error; the log also gets what the upstream said
            log = {"outcome": "failed", "error": exc.summary(), "upstream": exc.detail}
            headers = upstream_headers(exc)
        headers.update(self.record.headers())
        self.record.emit(exc.status, **log, **self.extra_log)
        body = envelope(exc.message, exc.type, exc.param, exc.code)
        return Failure(exc.status, orjson.dumps(body), headers)

    def crashed(self, exc: BaseException) -> None:
        """A bug: logged as a 500 (the door's last handler answers the envelope)."""
        begin_server_span(self.gateway, self.record, self.endpoint, {}, {})
        self.record.emit(500, outcome="error", error=type(exc).__name__, **self.extra_log)

    async def end(self) -> None:
        """The request is no longer in flight: its concurrency slots back (a stream that was
        handed over gives them back at its own end)."""
        if not self.streaming:
            await self.gateway.limiter.release(self.reservation)


def priced(gateway: Gateway, record: RequestRecord, usage: Any = None) -> RequestCost:
    """What the request's upstream calls cost, kept on its record (for the log line, the
    headers, the metrics and the trace); `usage`: the answer's, as the limits settle it."""
    trace = record.trace
    record.cost = request_cost(
        trace.ledger if trace else None, gateway.prices, answered(trace, usage)
    )
    return record.cost


def answered(trace: Trace | None, usage: Any) -> Any:
    """The answer's usage as one call's, to price the answering call by where its backend
    reported none; None for a stream that was continued, whose usage adds up several calls
    (each priced on its own: the broken one at its estimate)."""
    return None if trace is not None and trace.continued else usage


def unsettled(trace: Trace | None) -> int:
    """Tokens of the request's upstream calls that its answer (if any) does not count."""
    return 0 if trace is None else unsettled_tokens(trace.ledger)


def total_tokens(usage: Any) -> int | None:
    """Tokens a response used, from its `usage` (None when it reported none): OpenAI's
    `total_tokens` (or its parts), or Anthropic's, whose input, output and prompt cache
    counts (written and read) are separate and have no total."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get(name) for name in usage_parts(usage)]
    return sum(p for p in parts if isinstance(p, int)) if any(parts) else None
