"""Per-request accounting: the response headers that say who answered, and the one
structured log line every request ends with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from policies.dispatch import Trace

log = structlog.get_logger("turnout.request")

REQUEST_ID = "x-request-id"
DEPLOYMENT = "x-turnout-deployment"
ANSWERED_BY_MODEL = "x-turnout-model"
ATTEMPTS = "x-turnout-attempts"
EMULATED = "x-turnout-emulated"
DROPPED = "x-turnout-dropped"
CLAMPED = "x-turnout-clamped"


@dataclass(slots=True)
class RequestRecord:
    endpoint: str
    request_id: str
    model: str | None = None
    stream: bool = False
    trace: Trace | None = None
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(
        cls, endpoint: str, incoming_id: str | None, new_id: Callable[[], str]
    ) -> RequestRecord:
        """A record for a new request, keeping the client's `x-request-id` if it sent one."""
        if incoming_id and len(incoming_id) <= 128:
            return cls(endpoint=endpoint, request_id=incoming_id)
        return cls(endpoint=endpoint, request_id=new_id())

    def headers(self) -> dict[str, str]:
        headers = {REQUEST_ID: self.request_id}
        trace = self.trace
        headers[ATTEMPTS] = str(len(trace.attempts)) if trace is not None else "0"
        if trace is not None and trace.target is not None:
            headers[DEPLOYMENT] = trace.target.label
            headers[ANSWERED_BY_MODEL] = trace.target.model_name
        translation = trace.translation if trace is not None else None
        if translation is not None:
            for name, items in (
                (EMULATED, translation.emulated),
                (DROPPED, translation.dropped),
                (CLAMPED, translation.clamped),
            ):
                if items:
                    headers[name] = ", ".join(items)
        return headers

    def emit(self, status: int, *, usage: Any = None, outcome: str = "ok", **extra: Any) -> None:
        trace = self.trace
        log.info(
            "request",
            request_id=self.request_id,
            endpoint=self.endpoint,
            model=self.model,
            stream=self.stream,
            deployment=trace.target.label if trace and trace.target else None,
            attempts=[
                {"deployment": a.deployment, "outcome": a.outcome, "ms": a.latency_ms}
                for a in (trace.attempts if trace else ())
            ],
            status=status,
            outcome=outcome,
            latency_ms=round((time.perf_counter() - self.started) * 1000.0, 2),
            usage=usage,
            **extra,
        )
