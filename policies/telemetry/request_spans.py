"""One traced request's spans: its server span, and a client span per upstream attempt,
each saying why it started (`turnout.attempt.reason`: first, retry, fallback, hedge or
continuation, with the previous attempt's deployment and error) and how it ended.

An attempt's span is the current OpenTelemetry context while its calls are made, so the
HTTP layer sends it on as the upstream's `traceparent` (providers/trace_headers.py), and
every call an emulation fans out from it is its child too. A stream's attempt span lasts
until its stream ends (`stream_spans.watched`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from policies.plan import Target
from policies.redaction import Redactor
from policies.telemetry.attributes import (
    OPERATIONS,
    PROVIDER_NAMES,
    Attributes,
    answer_texts,
    input_messages,
    output_messages,
    request_attributes,
    response_attributes,
    span_name,
)
from policies.telemetry.recorder import RecordedSpan, SpanRecorder
from policies.telemetry.stream_spans import watched
from policies.trace import OpenStream, Trace
from providers.errors import Failure, UpstreamError
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
        self._last: tuple[str, str | None] | None = None  # (deployment, its error) last ended
        self._answered: Attributes = {}  # the last successful attempt's answer

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
            token = otel_context.attach(set_span_in_context(span.current()))
            try:
                result = await call()
            except UpstreamError as exc:
                self._failed(span, target, exc)
                raise
            except asyncio.CancelledError:
                self._outcome(span, target, "cancelled", None)
                raise
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                self._outcome(span, target, "error", type(exc).__name__)
                raise
            finally:
                otel_context.detach(token)
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
        model = request.body.get("model")
        name = span_name(operation, model if isinstance(model, str) else None)
        span = self._recorder.child(self.server, name, SpanKind.CLIENT)
        self._started += 1
        self._in_flight += 1
        if not span.is_recording():
            return span
        kind = str(getattr(self._providers.get(target.deployment.provider), "kind", ""))
        attributes = request_attributes(operation, request.body)
        attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(kind, kind)
        attributes["turnout.deployment"] = target.label
        attributes["turnout.attempt.reason"] = reason
        attributes["turnout.attempt.number"] = self._started
        if self._last is not None:
            attributes["turnout.attempt.previous_deployment"] = self._last[0]
            if self._last[1] is not None:
                attributes["turnout.attempt.previous_error"] = self._last[1]
        if self._capture and (prompt := input_messages(request.body, self._capture)) is not None:
            attributes["gen_ai.input.messages"] = prompt
        span.set_attributes(attributes)
        return span

    def answered(self, span: RecordedSpan, body: Mapping[str, Any]) -> None:
        """A whole answer came: its model, usage and finish reasons on the attempt."""
        if not span.is_recording():
            return
        attributes = response_attributes(body)
        if self._capture:
            texts = answer_texts(body)
            if texts:
                reasons = dict(enumerate(attributes.get("gen_ai.response.finish_reasons", ())))
                attributes["gen_ai.output.messages"] = output_messages(
                    texts, reasons, self._capture
                )
        span.set_attributes(attributes)
        self.note_answer(attributes)

    def note_answer(self, attributes: Attributes) -> None:
        """The request's answer so far (the server span reports the last)."""
        self._answered = {
            k: v
            for k, v in attributes.items()
            if k
            in ("gen_ai.response.model", "gen_ai.response.id", "gen_ai.response.finish_reasons")
        }

    def _failed(self, span: RecordedSpan, target: Target, error: UpstreamError) -> None:
        # An upstream's words may echo the credentials Turnout sent it or name its
        # internal address: masked as a client would get them.
        text = self._redactor.for_client(error.summary(), target.label)
        kind = str(error.status) if error.failure is Failure.STATUS else error.failure.value
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, text))
            span.set_attribute("error.type", kind)
            if error.failure is Failure.STATUS:
                span.set_attribute("http.response.status_code", error.status)
        self._outcome(span, target, "error", text)

    def _outcome(self, span: RecordedSpan, target: Target, outcome: str, error: str | None) -> None:
        """The attempt ended (`error`: why, if it failed): its span too."""
        self._last = (target.label, error)
        self._in_flight -= 1
        if span.is_recording():
            span.set_attribute("turnout.attempt.outcome", outcome)
        span.end()

    def stream_failed(self, span: RecordedSpan, target: Target, error: UpstreamError) -> None:
        """A committed stream broke (its span ends)."""
        self._failed(span, target, error)

    def stream_ended(self, span: RecordedSpan, target: Target, outcome: str) -> None:
        self._outcome(span, target, outcome, None)

    def finish(
        self, attributes: Attributes, status: int, error_type: str | None, model: str | None = None
    ) -> None:
        """The request's end: the server span's last attributes, and the span ended.
        `model`: the configured model it was routed to, which completes the span's name
        (`chat m`); a client's unresolved model name never names a span (see
        `Tracing.request`)."""
        span = self.server
        if model is not None:
            span.name = span_name(span.name, model)
        if span.is_recording():
            attributes.update(self._answered)
            attributes["http.response.status_code"] = status
            if error_type is not None:
                attributes["error.type"] = error_type
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()
