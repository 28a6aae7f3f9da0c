"""Incremental Server-Sent Events decoder fed with raw bytes.

Written here rather than taken from a library because the SSE parsers on PyPI are tied to
one HTTP client's response object (httpx-sse to httpx, aiohttp-sse-client to its own
session), while adapters read bytes from whichever transport they use. The decoder
follows the WHATWG event-stream rules that matter for LLM streams: lines may end in LF,
CRLF or CR and may be split across reads anywhere (a CRLF included), `:` lines are
comments, several `data:` lines join with newlines, and a blank line dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"


class SSEDecoder:
    """Feed bytes as they arrive; get back the events they complete."""

    def __init__(self) -> None:
        self._pending = b""
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        lines = (self._pending + chunk).splitlines(keepends=True)
        self._pending = b""
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._pending = lines.pop()
        elif lines and lines[-1].endswith(b"\r"):
            # A CR that ends a read may be the first half of a CRLF.
            self._skip_lf = True
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r\n").decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """The body ended cleanly: dispatch what an unterminated last event holds."""
        events = self.feed(b"\n") if self._pending else []
        if self._data:
            events.append(self._dispatch())
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if self._data:
                return self._dispatch()
            self._reset()
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(data="\n".join(self._data), event=self._event or "message")
        self._reset()
        return event

    def _reset(self) -> None:
        self._data = []
        self._event = ""
