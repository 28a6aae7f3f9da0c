"""Per-request accounting: the response headers that say who answered, and what every
request ends with: one structured log line, its metrics, and leaving the gateway."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from policies.pricing.cost import RequestCost
from policies.redaction import Redactor
from policies.routing import Route
from policies.spend.book import SpendBook
from policies.teams import Caller
from policies.trace import Trace
from router.cost_report import COST_HEADER, header_value, log_fields
from router.header_values import header_list
from router.metrics import Metrics

if TYPE_CHECKING:
    from policies.telemetry.request_spans import RequestSpans

log = structlog.get_logger("turnout.request")

REQUEST_ID = "x-request-id"
CLIENT_REQUEST_ID = "x-client-request-id"
DEPLOYMENT = "x-turnout-deployment"
ANSWERED_BY_MODEL = "x-turnout-model"
ATTEMPTS = "x-turnout-attempts"
EMULATED = "x-turnout-emulated"
DROPPED = "x-turnout-dropped"
CLAMPED = "x-turnout-clamped"
CACHE = "x-turnout-cache"


# A client's request id is echoed and logged only when it is short and plain ASCII: UUIDs,
# trace ids and the like; anything else could forge log fields or break a header.
_SAFE_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def safe_client_id(value: str | None) -> str | None:
    return value if value is not None and _SAFE_CLIENT_ID.fullmatch(value) else None


class InFlight(Protocol):
    """What counts requests in flight (the gateway serving them, so a reload knows when
    the old one has drained)."""

    def enter(self) -> None: ...

    def leave(self) -> None: ...


@dataclass(slots=True)
class RequestRecord:
    endpoint: str
    request_id: str
    model: str | None = None
    stream: bool = False
    trace: Trace | None = None
    started: float = field(default_factory=time.perf_counter)
    first_chunk_at: float | None = None  # streams: when the first chunk was ready
    caller: Caller | None = None
    route: Route | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)  # rate limits, cache
    client_request_id: str | None = None  # the client's own `x-request-id`, if it is safe
    metrics: Metrics | None = None
    in_flight: InFlight | None = None  # entered by `begin`, left by `emit`
    redactor: Redactor | None = None  # masks the config's secrets in the log line
    # What the request's upstream calls cost (policies/pricing/cost.py), once it has ended;
    # set by the pipeline before the limits are settled and the line is logged.
    cost: RequestCost | None = None
    spend: SpendBook | None = None  # where its cost is added up per team, key and day
    spans: RequestSpans | None = None  # its trace's spans, while tracing is on
    # Ends the server span with the record's final state (set with `spans`).
    span_end: Callable[[RequestRecord, int, Any, str], None] | None = None

    @classmethod
    def begin(
        cls,
        endpoint: str,
        incoming_id: str | None,
        new_id: Callable[[], str],
        *,
        metrics: Metrics | None = None,
        in_flight: InFlight | None = None,
        redactor: Redactor | None = None,
        spend: SpendBook | None = None,
    ) -> RequestRecord:
        """A record for a new request, with an id of Turnout's own: a client's
        `x-request-id` (`incoming_id`) could repeat another's, so it is kept beside it, and
        only when short and plain. The request counts as in flight on `in_flight` until
        `emit`."""
        request_id = new_id()
        if in_flight is not None:
            in_flight.enter()
        return cls(
            endpoint,
            request_id,
            metrics=metrics,
            in_flight=in_flight,
            redactor=redactor,
            spend=spend,
            client_request_id=safe_client_id(incoming_id),
        )

    def mark_first_chunk(self) -> None:
        self.first_chunk_at = time.perf_counter()

    def headers(self) -> dict[str, str]:
        headers = {REQUEST_ID: self.request_id, **self.extra_headers}
        if self.client_request_id is not None:
            headers[CLIENT_REQUEST_ID] = self.client_request_id
        trace = self.trace
        headers[ATTEMPTS] = str(len(trace.attempts)) if trace is not None else "0"
        if trace is not None and trace.target is not None:
            headers[DEPLOYMENT] = trace.target.label
            headers[ANSWERED_BY_MODEL] = trace.target.model_name
        if self.cost is not None:  # a whole answer's (a stream's is not known yet)
            headers[COST_HEADER] = header_value(self.cost)
        translation = trace.translation if trace is not None else None
        if translation is not None:
            for name, items in (
                (EMULATED, translation.emulated),
                (DROPPED, translation.dropped),
                (CLAMPED, translation.clamped),
            ):
                if items:  # may name a client's own fields: encoded header-safe
                    headers[name] = header_list(items)
        return headers

    def emit(self, status: int, *, usage: Any = None, outcome: str = "ok", **extra: Any) -> None:
        """The end of the request, called once: log line, metrics, and out of flight."""
        elapsed = time.perf_counter() - self.started
        in_flight, self.in_flight = self.in_flight, None
        try:
            self._log(status, usage, outcome, elapsed, extra)
            if self.metrics is not None:
                self._measure(self.metrics, status, usage, outcome, elapsed)
            if self.cost is not None and self.route is not None:
                self._spent(self.cost, self.route.plan.model)
            if self.span_end is not None:  # its server span ends (router/request_span.py)
                self.span_end(self, status, usage, outcome)
        finally:
            if in_flight is not None:
                in_flight.leave()

    def _log(
        self, status: int, usage: Any, outcome: str, elapsed: float, extra: dict[str, Any]
    ) -> None:
        trace = self.trace
        fields: dict[str, Any] = dict(
            request_id=self.request_id,
            client_request_id=self.client_request_id,
            endpoint=self.endpoint,
            model=self.model,
            stream=self.stream,
            key=self.caller.key_id if self.caller else None,
            team=self.caller.team if self.caller else None,
            rule=self.route.rule if self.route else None,
            deployment=trace.target.label if trace and trace.target else None,
            attempts=[
                {"deployment": a.deployment, "outcome": a.outcome, "ms": a.latency_ms}
                for a in (trace.attempts if trace else ())
            ],
            # Each hedge's outcome (won, lost, failed, cancelled), when a stream was hedged.
            **({"hedges": list(trace.hedges)} if trace and trace.hedges else {}),
            status=status,
            outcome=outcome,
            latency_ms=round(elapsed * 1000.0, 2),
            usage=usage,
            **log_fields(self.cost),
            **extra,
        )
        # Attempt outcomes and upstream errors are the upstream's words: they may echo
        # the credentials Turnout sent it.
        if self.redactor is not None:
            fields = self.redactor.scrub_fields(fields)
        log.info("request", **fields)

    def _measure(
        self, metrics: Metrics, status: int, usage: Any, outcome: str, elapsed: float
    ) -> None:
        # The label is the configured model the request was routed to: whatever else a
        # client sends as `model` (unknown names included) would make it unbounded.
        first = self.first_chunk_at
        metrics.request_finished(
            endpoint=self.endpoint,
            model=self.route.plan.model if self.route is not None else "",
            status=status,
            outcome=outcome,
            seconds=elapsed,
            trace=self.trace,
            first_token_s=None if first is None else first - self.started,
            usage=usage,
        )

    def _spent(self, cost: RequestCost, model: str) -> None:
        """The request's cost, per deployment it called, into the metrics and the spend
        book. Only routed requests count: the model label is then a configured one."""
        caller, trace = self.caller, self.trace
        team = (caller.team or "") if caller is not None else ""
        key = caller.key_id if caller is not None else ""
        if self.metrics is not None:
            self.metrics.spent(team, key, model, cost)
        if self.spend is not None:
            answered = trace.target.label if trace is not None and trace.target else None
            self.spend.record(team, key, model, cost, answered)
