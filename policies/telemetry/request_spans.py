"""One traced request's spans: its server span, and a client span per upstream attempt,
each saying why it started (`turnout.attempt.reason`: first, retry, fallback, hedge or
continuation, with the previous attempt's deployment and error) and how it ended.

An attempt's span is the upstream trace context while its calls are made, so the HTTP
layer sends it on as the upstream's `traceparent` (providers/trace_headers.py), and every
call an emulation fans out from it is its child too. A stream's attempt span lasts until
its stream ends (`stream_spans.watched`).

The request path takes only the facts an attribute needs (a few values, never a body)
and leaves building the GenAI attribute maps to the export thread (`RecordedSpan.later`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from policies.config import Deployment
from policies.plan import Target
from policies.redaction import Redactor
from policies.telemetry.attributes import (
    OPERATIONS,
    PROVIDER_NAMES,
    Answer,
    Attributes,
    answer_attributes,
    answer_facts,
    answer_texts,
    input_messages,
    kept_usage,
    output_messages,
    request_attributes,
    request_facts,
    response_attributes,
    span_name,
)
from policies.telemetry.recorder import CLIENT, Later, RecordedSpan, SpanRecorder
from policies.telemetry.stream_spans import watched
from policies.trace import OpenStream, Trace
from providers.errors import Failure, UpstreamError
from providers.trace_headers import UPSTREAM_TRACE
from providers.types import ProviderRequest, ProviderResponse

T = TypeVar("T")


class RequestSpans:
    """The spans of one request (made by `Tracing.request`)."""

    __slots__ = (
        "_answered",
        "_capture",
        "_continued",
        "_in_flight",
        "_last",
        "_providers",
        "_recorder",
        "_redactor",
        "_started",
        "server",
    )

    def __init__(
        self,
        recorder: SpanRecorder,
        server: RecordedSpan,
        providers: Mapping[str, object],
        redactor: Redactor,
        capture: int,
    ) -> None:
        """`capture`: the most characters of prompt and of answer text put on each
        attempt's span (`capture_content`); 0: none."""
        self._recorder = recorder
        self.server = server
        self._providers = providers
        self._redactor = redactor
        self._capture = capture
        self._started = 0  # attempts started
        self._in_flight = 0  # attempts whose span is open (a stream's: until it ends)
        self._continued = 0  # the trace's continuations already seen
        # The deployment last ended and its error, if it failed.
        self._last: tuple[Deployment, str | None] | None = None
        self._answered: Answer | None = None  # the last successful attempt's answer

    def attempts(
        self,
        trace: Trace,
        target: Target,
        request: ProviderRequest,
        call: Callable[[], Awaitable[T]],
    ) -> Callable[[], Awaitable[T]]:
        """`call` (one deployment's turn: each call of it one attempt) with a span per
        attempt, current while it runs."""
        tries = 0

        async def traced() -> T:
            nonlocal tries
            reason = self._reason(trace, tries)
            tries += 1
            span = self._start(target, request, reason)
            token = UPSTREAM_TRACE.set(span.traceparent())
            try:
                result = await call()
            except UpstreamError as exc:
                self._failed(span, target, exc)
                raise
            except asyncio.CancelledError:
                self._outcome(span, target, "cancelled", None)
                raise
            except BaseException as exc:
                if span.recording:
                    span.attributes["error.type"] = type(exc).__name__
                self._outcome(span, target, "error", type(exc).__name__)
                raise
            finally:
                UPSTREAM_TRACE.reset(token)
            if isinstance(result, OpenStream):
                rest = watched(self, span, target, result, self._capture)
                return cast(T, OpenStream(result.first, rest))
            if isinstance(result, ProviderResponse):
                self.answered(span, result.body)
            self._outcome(span, target, "ok", None)
            return result

        return traced

    def _reason(self, trace: Trace, tries: int) -> str:
        """Why the next attempt starts: the same turn again (retry), a broken stream's
        continuation, a hedge beside a running attempt, the plan's first, or a fallback."""
        if tries:
            return "retry"
        if trace.continued > self._continued:
            self._continued = trace.continued
            return "continuation"
        if self._in_flight:
            return "hedge"
        return "fallback" if self._started else "first"

    def _start(self, target: Target, request: ProviderRequest, reason: str) -> RecordedSpan:
        operation = OPERATIONS.get(request.endpoint, "chat")
        body = request.body
        model = body.get("model")
        name = span_name(operation, model if type(model) is str else None)
        span = self._recorder.child(self.server, name, CLIENT)
        self._started += 1
        self._in_flight += 1
        if not span.recording:
            return span
        kind = str(getattr(self._providers.get(target.deployment.provider), "kind", ""))
        facts = (operation, *request_facts(body))
        deployment = target.deployment
        span.later.append(
            (attempt_attributes, (facts, kind, deployment, reason, self._started, self._last))
        )
        if self._capture and (prompt := input_messages(body, self._capture)) is not None:
            span.attributes["gen_ai.input.messages"] = prompt
        return span

    def answered(self, span: RecordedSpan, body: Mapping[str, Any]) -> None:
        """A whole answer came: its model, usage and finish reasons on the attempt."""
        if not span.recording:
            return
        answer = answer_facts(body)
        span.later.append((response_attributes, (kept_usage(body.get("usage")), answer)))
        if self._capture:
            texts = answer_texts(body)
            if texts:
                reasons = dict(enumerate(answer[2]))
                span.attributes["gen_ai.output.messages"] = output_messages(
                    texts, reasons, self._capture
                )
        self._answered = answer

    def note_answer(self, answer: Answer) -> None:
        """The request's answer so far (the server span reports the last)."""
        self._answered = answer

    def _failed(self, span: RecordedSpan, target: Target, error: UpstreamError) -> None:
        # An upstream's words may echo the credentials Turnout sent it or name its
        # internal address: masked as a client would get them.
        text = self._redactor.for_client(error.summary(), target.label)
        kind = str(error.status) if error.failure is Failure.STATUS else error.failure.value
        if span.recording:
            span.set_error(text)
            span.attributes["error.type"] = kind
            if error.failure is Failure.STATUS:
                span.attributes["http.response.status_code"] = error.status
        self._outcome(span, target, "error", text)

    def _outcome(self, span: RecordedSpan, target: Target, outcome: str, error: str | None) -> None:
        """The attempt ended (`error`: why, if it failed): its span too."""
        self._last = (target.deployment, error)
        self._in_flight -= 1
        if span.recording:
            span.attributes["turnout.attempt.outcome"] = outcome
            span.end()

    def stream_failed(self, span: RecordedSpan, target: Target, error: UpstreamError) -> None:
        """A committed stream broke (its span ends)."""
        self._failed(span, target, error)

    def stream_ended(self, span: RecordedSpan, target: Target, outcome: str) -> None:
        self._outcome(span, target, outcome, None)

    def finish(
        self, status: int, error_type: str | None, model: str | None, later: Later | None
    ) -> None:
        """The request's end: the server span's last attributes (`later`: the record's,
        router/request_span.py), and the span ended. `model`: the configured model it was
        routed to, which completes the span's name (`chat m`); a client's unresolved model
        name never names a span (see `Tracing.request`)."""
        span = self.server
        if not span.recording:
            return
        if model is not None:
            span.name = span_name(span.name, model)
        if later is not None:
            span.later.append(later)
        if self._answered is not None:
            span.later.append((answer_attributes, self._answered))
        span.attributes["http.response.status_code"] = status
        if error_type is not None:
            span.attributes["error.type"] = error_type
            if status >= 500:
                span.set_error()
        span.end()


def attempt_attributes(
    request: tuple[str, str | None, int | None, float | None],
    kind: str,
    deployment: Deployment,
    reason: str,
    number: int,
    last: tuple[Deployment, str | None] | None,
) -> Attributes:
    """An attempt's span's attributes as it starts (on the export thread): what it asked
    (`request_facts`), whom, and why (the previous attempt's deployment and error)."""
    attributes = request_attributes(*request)
    attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(kind, kind)
    attributes["turnout.deployment"] = deployment.label
    attributes["turnout.attempt.reason"] = reason
    attributes["turnout.attempt.number"] = number
    if last is not None:
        attributes["turnout.attempt.previous_deployment"] = last[0].label
        if last[1] is not None:
            attributes["turnout.attempt.previous_error"] = last[1]
    return attributes
