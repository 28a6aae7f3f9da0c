"""Mock OpenAI upstream for `streams_bench.py`: slow chat streams that are held open.

``POST /v1/chat/completions`` with ``"stream": true`` answers the role chunk at once; when
the body's model is ``held``, the stream then waits (an SSE comment every 5 s, so that no
idle timeout cuts it) until ``POST /release`` or ``--max-hold`` seconds, then sends
``CHUNKS`` content chunks ``--gap`` seconds apart and ``[DONE]``. Any other model is
answered at once the same way (warm-up). ``GET /state`` says how many streams are open.

    python bench/streams_upstream.py --port 9102 [--gap 0.05] [--max-hold 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import orjson
import uvloop
from aiohttp import web

CHUNKS = 8
TEXT = "".join(f" word{i}" for i in range(CHUNKS))


def event(delta: dict[str, str], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class Streams:
    def __init__(self, gap: float, max_hold: float) -> None:
        self.gap = gap
        self.max_hold = max_hold
        self.open = 0
        self.peak = 0
        self.released = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event({"role": "assistant", "content": ""}, None))
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            if body.get("model") == "held":
                await self._hold(response)
            for i in range(CHUNKS):
                await asyncio.sleep(self.gap)
                await response.write(event({"content": f" word{i}"}, None))
            await response.write(event({}, "stop") + b"data: [DONE]\n\n")
            await response.write_eof()
        finally:
            self.open -= 1
        return response

    async def _hold(self, response: web.StreamResponse) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.max_hold
        while not self.released.is_set() and loop.time() < until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), min(5.0, until - loop.time()))
            if not self.released.is_set():
                await response.write(b": keep-alive\n\n")

    async def state(self, _: web.Request) -> web.Response:
        return web.json_response({"open": self.open, "peak": self.peak})

    async def release(self, _: web.Request) -> web.Response:
        self.released.set()
        return web.json_response({"open": self.open})


async def serve(port: int, gap: float, max_hold: float) -> None:
    streams = Streams(gap, max_hold)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", streams.chat)
    app.router.add_get("/state", streams.state)
    app.router.add_post("/release", streams.release)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=8192).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--max-hold", type=float, default=120.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.gap, args.max_hold))


if __name__ == "__main__":
    main()
