"""A relayed stream sent as ASGI messages, for the hot OpenAI doors (router/endpoints.py).

Litestar's streaming response does the same through an anyio task group (a task, a
cancel scope and its `repr` per stream: ~8 % of a stream's CPU); this is one watcher task
on `receive`. What it keeps: the body is closed however the sending ends (as
router/closing_stream.py makes Litestar's do), a client that goes away cancels the
stream at once (its upstream call with it), and a write the client does not take
(router/connection_guard.py's `SendTimeout`) propagates to the guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from litestar.types import Receive, Scope, Send

CONTENT_TYPE = b"text/event-stream; charset=utf-8"  # what Litestar's response sent


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Response headers as ASGI sends them (values Turnout wrote: latin-1, no CR/LF)."""
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class StreamAnswer:
    __slots__ = ("frames", "headers")

    def __init__(self, frames: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        self.frames, self.headers = frames, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = asyncio.current_task()
        assert handler is not None  # always inside a task under an ASGI server
        gone = ended = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not ended:  # a disconnect after the last message ends nothing
                gone = True
                handler.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        raw = raw_headers(self.headers)
        raw.append((b"content-type", CONTENT_TYPE))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if gone and handler.uncancel() == 0:
                return  # the client went away: the stream is over, nothing more to send
            raise
        finally:
            ended = True
            watcher.cancel()
            await self.frames.aclose()
