"""Mock OpenAI chat-completions upstream for transport benchmarks.

``POST /v1/chat/completions`` answers a fixed ``chat.completion`` JSON, or, when the
body has ``"stream": true``, a short SSE stream of ``chat.completion.chunk`` events
ending with ``data: [DONE]``. ``POST /v1/messages`` (raw implementation only) answers the
same text in Anthropic's shapes: a ``message`` JSON, or its named stream events
(``message_start`` … ``message_stop``, one ``text_delta`` per word), for the Messages
door's pass-through (bench/messages_bench.py). Connections are kept alive.

Two implementations, so the faster one can be picked (see RESULTS.md):
``raw`` (uvloop + httptools protocol, the default) and ``aiohttp`` (aiohttp.web).

    python bench/transport/mock_upstream.py --port 9101 [--impl raw|aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import orjson
import uvloop
from aiohttp import web

PATH = b"/v1/chat/completions"
CREATED = 1_700_000_000

COMPLETION: bytes = orjson.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": CREATED,
        "model": "mock-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
)


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    body = orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "mock-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )
    return b"data: " + body + b"\n\n"


_WORDS = ["Hello", "!", " How", " can", " I", " help", " today", "?"]
SSE_EVENTS: list[bytes] = (
    [_chunk({"role": "assistant", "content": ""}, None)]
    + [_chunk({"content": w}, None) for w in _WORDS[:-1]]
    + [_chunk({"content": _WORDS[-1]}, "stop"), b"data: [DONE]\n\n"]
)

MESSAGES_PATH = b"/v1/messages"
MESSAGE: bytes = orjson.dumps(
    {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": "mock-model",
        "content": [{"type": "text", "text": "".join(_WORDS)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 9},
    }
)


def _event(event: dict[str, object]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (str(event["type"]).encode(), orjson.dumps(event))


_MESSAGE_START = {**orjson.loads(MESSAGE), "content": [], "stop_reason": None}
MESSAGE_EVENTS: list[bytes] = [
    _event({"type": "message_start", "message": _MESSAGE_START}),
    _event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ),
    _event({"type": "ping"}),
    *(
        _event(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
        )
        for w in _WORDS
    ),
    _event({"type": "content_block_stop", "index": 0}),
    _event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        }
    ),
    _event({"type": "message_stop"}),
]

JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n" % len(COMPLETION)
)
MESSAGE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n" % len(MESSAGE)
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def _is_stream(body: bytes) -> bool:
    if b'"stream"' not in body:
        return False
    try:
        return orjson.loads(body).get("stream") is True
    except orjson.JSONDecodeError:
        return False


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, parsed by httptools."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence cast, not isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = b"".join(self.body)
        self.body.clear()
        messages = self.url == MESSAGES_PATH
        if self.url not in (PATH, MESSAGES_PATH) or self.parser.get_method() != b"POST":
            transport.write(NOT_FOUND)
        elif _is_stream(body):
            # One write per event, like a real token stream (minus the think time).
            transport.write(SSE_HEAD)
            for event in MESSAGE_EVENTS if messages else SSE_EVENTS:
                transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            transport.write(b"0\r\n\r\n")
        elif messages:
            transport.write(MESSAGE_HEAD + MESSAGE)
        else:
            transport.write(JSON_HEAD + COMPLETION)
        if not self.parser.should_keep_alive():
            transport.close()


async def serve_raw(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


async def _aiohttp_handler(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if not _is_stream(body):
        return web.Response(body=COMPLETION, content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in SSE_EVENTS:
        await response.write(event)
    await response.write_eof()
    return response


def serve_aiohttp(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post(PATH.decode(), _aiohttp_handler)
    web.run_app(app, host=host, port=port, access_log=None, print=None, backlog=2048)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--impl", choices=["raw", "aiohttp"], default="raw")
    args = parser.parse_args()
    uvloop.install()
    if args.impl == "raw":
        asyncio.run(serve_raw(args.host, args.port))
    else:
        serve_aiohttp(args.host, args.port)


if __name__ == "__main__":
    main()
