"""A streamed attempt's span, kept open while its stream is relayed: the chunks seen on
the way (model, finish reasons, usage, and the text when content is captured), and the
span ended with the stream, however it ends (done, broken, or closed early: the client
went away, a hedge lost, a continuation stopped at its seam)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from policies.plan import Target
from policies.telemetry.attributes import (
    Answer,
    Attributes,
    kept_usage,
    output_messages,
    usage_attributes,
)
from policies.telemetry.recorder import RecordedSpan
from policies.trace import OpenStream
from providers.errors import UpstreamError
from providers.types import JSONObject


class StreamEnds(Protocol):
    """What a stream's span tells its request's spans (policies/telemetry/request_spans.py)."""

    def note_answer(self, answer: Answer) -> None: ...

    def stream_failed(self, span: RecordedSpan, target: Target, error: UpstreamError) -> None: ...

    def stream_ended(self, span: RecordedSpan, target: Target, outcome: str) -> None: ...


class StreamSeen:
    """What a stream's chunks said of the answer (OpenAI chunks, or Anthropic's and the
    Responses API's events passed through natively)."""

    __slots__ = ("capture", "left", "model", "reasons", "texts", "usage")

    def __init__(self, capture: int) -> None:
        """`capture`: the most characters of text kept (0: none; see `_text`)."""
        self.capture = capture
        # One past the bound, so `output_messages` sees the text was cut and says so.
        self.left = capture + 1
        self.model: str | None = None
        self.reasons: dict[int, str] = {}
        self.texts: dict[int, list[str]] = {}  # pieces, joined once at the end
        self.usage: Any = None

    def _text(self, index: int, text: str) -> None:
        """A delta's text, kept while the bound allows: a long stream's thousands of
        deltas are appended (not copied into a new string each time, which is quadratic)
        and stop being kept at the bound, so capturing costs at most `capture` characters."""
        if self.left <= 0:
            return
        kept = text[: self.left]
        self.left -= len(kept)
        self.texts.setdefault(index, []).append(kept)

    def observe(self, chunk: JSONObject) -> None:
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            self._native(chunk)
            return
        for choice in choices:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0)
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.reasons[index] = reason
            if self.capture:
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, Mapping) else choice.get("text")
                if isinstance(text, str):
                    self._text(index, text)

    def _native(self, event: JSONObject) -> None:
        """Anthropic's `message_start` / `message_delta`, a Response's last event."""
        for key in ("message", "response"):
            inner = event.get(key)
            if isinstance(inner, Mapping):
                model, usage = inner.get("model"), inner.get("usage")
                if isinstance(model, str):
                    self.model = model
                if usage:
                    self.usage = {**(self.usage or {}), **usage}
                status = inner.get("status")
                if key == "response" and isinstance(status, str):
                    self.reasons[0] = status
        delta = event.get("delta")
        if isinstance(delta, Mapping) and isinstance(delta.get("stop_reason"), str):
            self.reasons[0] = delta["stop_reason"]
        if self.capture and isinstance(delta, Mapping) and isinstance(delta.get("text"), str):
            self._text(0, delta["text"])

    def finish_reasons(self) -> list[str]:
        return [self.reasons[i] for i in sorted(self.reasons)]

    def attributes(self) -> Attributes:
        attributes = usage_attributes(self.usage)
        if self.model is not None:
            attributes["gen_ai.response.model"] = self.model
        if self.reasons:
            attributes["gen_ai.response.finish_reasons"] = self.finish_reasons()
        if self.capture and self.texts:
            texts = {i: "".join(pieces) for i, pieces in self.texts.items()}
            attributes["gen_ai.output.messages"] = output_messages(
                texts, self.reasons, self.capture
            )
        return attributes


async def watched(
    spans: StreamEnds, span: RecordedSpan, target: Target, opened: OpenStream, capture: int
) -> AsyncGenerator[JSONObject, None]:
    """`opened`'s chunks after the first, as they come; `span` ends with the stream.
    `capture`: the most characters of its text put on the span (0: none)."""
    seen = StreamSeen(capture) if span.recording else None
    if seen is not None:
        seen.observe(opened.first)
    outcome = "closed"  # closed before its end, unless it ends or breaks
    try:
        async for chunk in opened.rest:
            if seen is not None:
                seen.observe(chunk)
            yield chunk
        outcome = "ok"
    except UpstreamError as exc:
        outcome = "error"
        _seen(spans, span, seen)
        spans.stream_failed(span, target, exc)
        raise
    finally:
        await opened.rest.aclose()
        if outcome != "error":
            _seen(spans, span, seen)
            spans.stream_ended(span, target, outcome)


def _seen(spans: StreamEnds, span: RecordedSpan, seen: StreamSeen | None) -> None:
    """The stream's answer on its span (its attributes worked out on the export thread:
    `seen` is not changed once the stream has ended) and as the request's answer."""
    if seen is None:
        return
    seen.usage = kept_usage(seen.usage)  # the last chunk's own may still be changed
    span.later.append((StreamSeen.attributes, (seen,)))
    spans.note_answer((seen.model, None, seen.finish_reasons()))
