"""A loopback OpenAI-style upstream that holds every chat stream open until `hold` streams
are open at once, then finishes each with a few chunks a small gap apart: so a test knows
that `hold` streams really were in flight together, without timing anything.

aiohttp.web in a daemon thread with its own event loop (as FakeOpenAIUpstream runs), with
a listen backlog big enough for thousands of connections arriving at once::

    with HeldStreams(hold=2000) as up:
        ...  # point a provider at up.base_url; each stream answers TEXT
        assert up.peak == 2000
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

import orjson
from aiohttp import web

PIECES = ("Held", " streams", " end", " whole.")
TEXT = "".join(PIECES)


def _event(delta: dict[str, str], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-held",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "held",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class HeldStreams:
    def __init__(self, hold: int, *, gap: float = 0.02, max_hold: float = 60.0) -> None:
        """`max_hold`: how long a stream waits for the others at most (then it goes on,
        and `peak` tells how many were open together)."""
        self.hold = hold
        self.gap = gap
        self.max_hold = max_hold
        self.peak = 0
        self.finished = 0
        self._open = 0
        self._all_open: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HeldStreams:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._all_open = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=8192)
        await site.start()
        server = site._server  # aiohttp exposes no port of its own for port 0
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream") is not True:
            return web.json_response({"error": {"message": "stream only"}}, status=400)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_event({"role": "assistant", "content": ""}, None))
        assert self._all_open is not None
        self._open += 1
        self.peak = max(self.peak, self._open)
        try:
            if self._open >= self.hold:
                self._all_open.set()
            with contextlib.suppress(TimeoutError):  # `peak` says how many made it
                await asyncio.wait_for(self._all_open.wait(), self.max_hold)
            for piece in PIECES:
                await asyncio.sleep(self.gap)
                await response.write(_event({"content": piece}, None))
            await response.write(_event({}, "stop") + b"data: [DONE]\n\n")
            await response.write_eof()
        finally:
            self._open -= 1
        self.finished += 1
        return response
