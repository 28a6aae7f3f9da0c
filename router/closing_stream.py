"""A streamed response whose body is closed however its sending ends.

Litestar iterates a `Stream`'s body with `async for` and leaves it open when a write
fails (`server.send_timeout` passing on a client that stopped reading, in
router/connection_guard.py): the body generator then stays suspended until the garbage
collector finds it, and with it the upstream call it relays, the request's log line and
its concurrency slots. Closing it in a `finally` ends all of those at once."""

from __future__ import annotations

from typing import Any

from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Send


class _ClosingASGIStream(ASGIStreamingResponse):
    __slots__ = ()  # the same layout as its base: an instance of it is re-classed here

    async def _stream(self, send: Send) -> None:
        try:
            await super()._stream(send)
        finally:
            aclose = getattr(self.iterator, "aclose", None)
            if aclose is not None:
                await aclose()


class ClosingStream(Stream):
    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        if type(response) is ASGIStreamingResponse:
            response.__class__ = _ClosingASGIStream
        return response
