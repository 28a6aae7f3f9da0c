"""Minimal Litestar chat-completions proxy, to compare ASGI servers and upstream clients.

One handler: read the raw body, parse it with orjson, forward it to the mock upstream
with the chosen client, and return the upstream JSON bytes (or re-framed SSE when the
body asks for ``stream``). The client is opened and closed in the app's lifespan.

uvicorn (uvloop + httptools):
    python bench/transport/minimal_proxy.py --client aiohttp --port 9201
granian (factory reads BENCH_CLIENT / BENCH_UPSTREAM):
    BENCH_CLIENT=aiohttp granian --interface asgi --loop uvloop --workers 1 --port 9202 \
        --no-access-log --log-level warning --factory --working-dir bench/transport \
        minimal_proxy:create_app_from_env
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

import orjson
import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.response import Stream
from upstream_clients import ClientKind, UpstreamClient, make_client

DEFAULT_UPSTREAM = "http://127.0.0.1:9101/v1/chat/completions"
POOL_LIMIT = 256  # above the highest benchmark concurrency, so the pool never queues


async def _reframe(upstream: UpstreamClient, body: bytes) -> AsyncIterator[bytes]:
    async for payload in upstream.stream(body):
        yield b"data: " + payload + b"\n\n"


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    payload = orjson.loads(await request.body())
    upstream: UpstreamClient = request.app.state.upstream
    body = orjson.dumps(payload)
    if payload.get("stream") is True:
        return Stream(_reframe(upstream, body), media_type="text/event-stream")
    return Response(await upstream.complete(body), media_type="application/json")


def create_app(kind: ClientKind, upstream_url: str) -> Litestar:
    async def open_client(app: Litestar) -> None:
        app.state.upstream = make_client(kind, upstream_url, POOL_LIMIT)

    async def close_client(app: Litestar) -> None:
        await app.state.upstream.aclose()

    return Litestar(
        route_handlers=[chat_completions],
        on_startup=[open_client],
        on_shutdown=[close_client],
        openapi_config=None,
        logging_config=None,
    )


def create_app_from_env() -> Litestar:
    kind = os.environ.get("BENCH_CLIENT", "aiohttp")
    if kind not in get_args(ClientKind):
        raise SystemExit(f"BENCH_CLIENT must be one of {get_args(ClientKind)}, not {kind!r}")
    return create_app(cast(ClientKind, kind), os.environ.get("BENCH_UPSTREAM", DEFAULT_UPSTREAM))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=get_args(ClientKind), default="aiohttp")
    parser.add_argument("--port", type=int, default=9201)
    parser.add_argument("--upstream", default=DEFAULT_UPSTREAM)
    args = parser.parse_args()
    app = create_app(args.client, args.upstream)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
