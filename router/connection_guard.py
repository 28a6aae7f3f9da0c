"""What one client can hold: a request body must arrive whole within
`server.body_timeout`, and past `server.max_connections` requests in flight new ones are
refused at once rather than queued.

An ASGI wrapper around the app, so it sees every request, routed or not:

- The body deadline starts when the request's headers are in. A `receive` still waiting
  for body bytes when it passes raises `BodyTimeout`, which the handler answers with a
  408 in OpenAI's envelope and logs like any error (a handler that lets it escape gets
  the same 408 from here; once a response has started, nothing can be sent and the
  server drops the connection).
- A response that starts before the body was read to its end (a 401/429 decided from
  the headers, a 408, a 413) carries `connection: close`, so both servers close the
  connection instead of reading and discarding the rest of a slow body.
- Requests in flight past `max_in_flight` are answered 503 in OpenAI's envelope, with
  `Retry-After: 1`, without reading their bodies. This guard does it under both servers,
  rather than their own limits (router/server.py says why). What it counts is requests
  whose headers are in: a socket that has sent nothing is the server's to time out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import structlog
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseStartEvent,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from policies.errors import ApiError
from router.errors import envelope

log = structlog.get_logger("turnout.router")


class BodyTimeout(ApiError):
    """The request body did not arrive whole within `server.body_timeout`."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"The request body did not arrive within {timeout:g}s.",
            status=408,
            code="request_timeout",
            headers={"connection": "close"},
        )


@dataclass(slots=True)
class ConnectionGuard:
    app: ASGIApp
    body_timeout: Callable[[], float]  # read per request: a config reload may change it
    max_in_flight: int  # `server.max_connections`, as read at start-up
    _in_flight: int = field(default=0, init=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:  # lifespan, websockets: untouched
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self.max_in_flight:
            log.warning("request_refused_at_capacity", max_connections=self.max_in_flight)
            await _answer(send, 503, _busy(self.max_in_flight))
            return
        self._in_flight += 1
        try:
            await _Exchange(scope, receive, send, self.body_timeout()).run(self.app)
        finally:
            self._in_flight -= 1


class _Exchange:
    """One request through the guard: its body deadline and whether the body is all in."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, timeout: float) -> None:
        self._scope, self._receive, self._send = scope, receive, send
        self._timeout = timeout
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._received = 0
        self._body_done = not _expects_body(scope)
        self._started = False

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self._scope, self.receive, self.send)
        except BodyTimeout as exc:
            if self._started:
                raise  # nothing more can be sent: the server drops the connection
            await _answer(self.send, exc.status, exc)

    async def receive(self) -> ReceiveMessage:
        if self._body_done:
            return await self._receive()
        left = self._deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                message = await self._receive()
        except TimeoutError:
            log.warning(
                "request_body_timeout",
                path=self._scope["path"],
                received_bytes=self._received,
                declared_bytes=_header(self._scope, b"content-length"),
                body_timeout=self._timeout,
            )
            raise BodyTimeout(self._timeout) from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._body_done = not message.get("more_body", False)
        else:  # the client went away: there is no more body to wait for
            self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._started = True
            if not self._body_done:
                message = _closing(message)
        await self._send(message)


def _closing(start: HTTPResponseStartEvent) -> HTTPResponseStartEvent:
    """The response head, asking the server to close the connection after it."""
    headers = list(start.get("headers", ()))
    if not any(bytes(name).lower() == b"connection" for name, _ in headers):
        headers.append((b"connection", b"close"))
    return {**start, "headers": headers}


def _expects_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _busy(limit: int) -> ApiError:
    return ApiError(
        f"Turnout is serving as many requests as it is configured to ({limit}). Try again in 1s.",
        status=503,
        type="server_error",
        code="server_overloaded",
        headers={"retry-after": "1", "connection": "close"},
    )


async def _answer(send: Send, status: int, error: ApiError) -> None:
    body = orjson.dumps(envelope(error.message, error.type, error.param, error.code))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
