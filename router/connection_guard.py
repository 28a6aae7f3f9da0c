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
- An upload (POST /v1/files, up to `storage.max_file_bytes`) has `body_timeout` plus one
  second per `server.upload_min_rate` bytes received: a large file may take its time, a
  trickle may not.
- Requests in flight past `max_in_flight` are answered 503 in OpenAI's envelope, with
  `Retry-After: 1`, without reading their bodies. This guard does it under both servers,
  rather than their own limits (router/server.py says why). What it counts is requests
  whose headers are in: a socket that has sent nothing is the server's to time out.
- One client credential (the `Authorization` header, counted by its digest) may hold at
  most `max_per_key` of those (`server.max_connections_per_key`, default half): past it
  it gets 429 with `Retry-After: 1`, so one tenant cannot take every slot from the rest.
- A response write the client does not accept within `server.send_timeout` (a reader that
  stopped reading) raises `SendTimeout` into the app, which cancels the upstream call and
  logs the request as 499; the connection is then dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from router.await_deadline import AwaitDeadline
from router.errors import envelope

UPLOAD_PATH = "/v1/files"

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


class SendTimeout(Exception):
    """The client did not accept a response write within `server.send_timeout`."""


def _default_upload_rate() -> float:
    return 65536.0


def _default_send_timeout() -> float:
    return 60.0


@dataclass(slots=True)
class ConnectionGuard:
    app: ASGIApp
    body_timeout: Callable[[], float]  # read per request: a config reload may change it
    max_in_flight: int  # `server.max_connections`, as read at start-up
    max_per_key: int | None = None  # `server.max_connections_per_key` (resolved), at start-up
    send_timeout: Callable[[], float] = _default_send_timeout  # read per request
    # An upload (POST /v1/files) may take longer than `body_timeout`, as long as it keeps
    # coming at this many bytes a second on average (`server.upload_min_rate`).
    upload_rate: Callable[[], float] = _default_upload_rate  # read per request
    _in_flight: int = field(default=0, init=False)
    _per_key: dict[bytes, int] = field(default_factory=dict, init=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:  # lifespan, websockets: untouched
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self.max_in_flight:
            log.warning("request_refused_at_capacity", max_connections=self.max_in_flight)
            await _answer(send, 503, _busy(self.max_in_flight))
            return
        key = _credential(scope) if self.max_per_key is not None else None
        if key is not None and self._per_key.get(key, 0) >= (self.max_per_key or 0):
            log.warning("request_refused_key_share", max_connections_per_key=self.max_per_key)
            await _answer(send, 429, _key_busy(self.max_per_key or 0))
            return
        self._in_flight += 1
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1
        try:
            exchange = _Exchange(scope, receive, send, self.body_timeout())
            exchange.send_timeout = self.send_timeout()
            if scope["method"] == "POST" and scope["path"] == UPLOAD_PATH:
                exchange.upload_rate = self.upload_rate()
            await exchange.run(self.app)
        finally:
            self._in_flight -= 1
            if key is not None and (left := self._per_key.pop(key) - 1) > 0:
                self._per_key[key] = left


class _Exchange:
    """One request through the guard: its body deadline and whether the body is all in."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, timeout: float) -> None:
        self._scope, self._receive, self._send = scope, receive, send
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout
        # One timer each per request, not one `asyncio.timeout` per receive or send.
        self._body_deadline = AwaitDeadline(self._loop)
        self._send_deadline = AwaitDeadline(self._loop)
        self._received = 0
        self._body_done = not _expects_body(scope)
        self._started = False
        self.send_timeout = 60.0
        self.upload_rate: float | None = None  # an upload's deadline grows with its bytes

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self._scope, self.receive, self.send)
        except BodyTimeout as exc:
            if self._started:
                raise  # nothing more can be sent: the server drops the connection
            await _answer(self.send, exc.status, exc)
        except Exception as exc:
            if not _from_send_timeout(exc):
                raise
            # Logged where it happened; the server drops the connection.
        finally:
            self._body_deadline.close()
            self._send_deadline.close()

    async def receive(self) -> ReceiveMessage:
        if self._body_done:
            return await self._receive()
        deadline = self._deadline
        if self.upload_rate is not None:
            deadline += self._received / self.upload_rate
        self._body_deadline.begin(deadline)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._body_deadline.expired():
                raise
            log.warning(
                "request_body_timeout",
                path=self._scope["path"],
                received_bytes=self._received,
                declared_bytes=_header(self._scope, b"content-length"),
                body_timeout=self._timeout,
            )
            raise BodyTimeout(self._timeout) from None
        finally:
            self._body_deadline.end()
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
        self._send_deadline.begin(self._loop.time() + self.send_timeout)
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self._send_deadline.expired():
                raise
            log.warning(
                "response_send_timeout", path=self._scope["path"], send_timeout=self.send_timeout
            )
            raise SendTimeout(f"the client accepted nothing for {self.send_timeout:g}s") from None
        finally:
            self._send_deadline.end()


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


def _from_send_timeout(exc: BaseException | None) -> bool:
    """Whether `exc` is, or was caused by, a `SendTimeout`: litestar streams a body from a
    task group (an exception group) and re-raises what fails after the response started."""
    while exc is not None:
        if isinstance(exc, SendTimeout):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return any(_from_send_timeout(inner) for inner in exc.exceptions)
        exc = exc.__cause__
    return False


def _credential(scope: Scope) -> bytes | None:
    """The digest of the request's credential, never the credential itself."""
    value = _header(scope, b"authorization")
    return hashlib.sha256(value.encode("latin-1")).digest() if value else None


def _key_busy(limit: int) -> ApiError:
    return ApiError(
        f"Too many requests in flight for this API key on this server (limit {limit}). "
        "Try again in 1s.",
        status=429,
        type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "1", "connection": "close"},
    )


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
