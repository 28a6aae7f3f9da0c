"""uvicorn's side of `server.header_timeout`: a connection must deliver each request's
headers within that many seconds of opening, or of the end of its previous response;
past it the connection is closed.

uvicorn has no such timeout. Its `timeout_keep_alive` is armed only once a response has
been sent and is cancelled by the first byte of the next request, so a socket that
connects and sends nothing, or trickles a header a byte at a time, is held for as long as
the client likes, and enough of them use up the process's file descriptors. This is the
httptools protocol uvicorn runs (`http="httptools"`) with that deadline added; granian
gets the same rule from hyper's `header_read_timeout` (router/server.py).

The deadline is fixed when it is armed: bytes that trickle in do not move it.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout: ClassVar[float]
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The latest request parsed is done, so none is pipelined behind it: the
        # connection now waits for a new request's headers.
        if self.cycle.response_complete and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def header_deadline_protocol(timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn as `http=`: uvicorn builds one per connection
    from the class alone, so the timeout rides on a subclass."""

    class HeaderDeadlineProtocol(_HeaderDeadlineProtocol):
        header_timeout = timeout

    return HeaderDeadlineProtocol
