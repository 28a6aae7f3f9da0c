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

# One line, or one event's data, larger than any real LLM stream sends (the default of
# providers.http_settings `max_event_bytes`).
DEFAULT_MAX_EVENT_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"


class EventTooLarge(Exception):
    """A line, or an event's data, grew past the decoder's cap: what was held is dropped.
    `events`: those the same read completed before it, still to be delivered."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: list[SSEEvent] = []


class SSEDecoder:
    """Feed bytes as they arrive; get back the events they complete.

    What it holds is bounded: an unended line, or the data of an undispatched event, past
    `max_event_bytes` raises `EventTooLarge` (a hostile or broken backend could otherwise
    grow one line without end)."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._pending: list[bytes] = []  # the unended line, in pieces: no copy per read
        self._pending_size = 0
        self._skip_lf = False
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        if b"\n" not in chunk and b"\r" not in chunk:
            self._hold(chunk)
            return []
        lines = b"".join([*self._pending, chunk]).splitlines(keepends=True)
        self._pending, self._pending_size = [], 0
        unended = None
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            unended = lines.pop()
        elif lines and lines[-1].endswith(b"\r"):
            # A CR that ends a read may be the first half of a CRLF.
            self._skip_lf = True
        events: list[SSEEvent] = []
        try:
            for raw in lines:
                event = self._line(raw.rstrip(b"\r\n").decode("utf-8", errors="replace"))
                if event is not None:
                    events.append(event)
            if unended is not None:
                self._hold(unended)
        except EventTooLarge as exc:
            exc.events = events
            raise
        return events

    def _hold(self, piece: bytes) -> None:
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._pending_size > self._max:
            self._pending, self._pending_size = [], 0
            raise EventTooLarge(f"an SSE line over {self._max} bytes")

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
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                self._reset()
                raise EventTooLarge(f"an SSE event's data over {self._max} bytes")
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
        self._data_size = 0
        self._event = ""
