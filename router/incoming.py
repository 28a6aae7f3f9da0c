"""What a door reads of an HTTP request: its headers and its ASGI `receive`.

Litestar's `Request` has both, and so does `Incoming`, the bare view the three hot
OpenAI endpoints (router/endpoints.py) take of an ASGI scope. Building a Litestar request,
resolving a handler's signature and rendering a `Response` cost ~11 % of a relayed
request's CPU (bench/README.md, "The hot path"); these endpoints need none of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from litestar.types import Receive, Scope


class HTTPRequest(Protocol):
    """A request as the doors read it: Litestar's `Request`, or an `Incoming`."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def receive(self) -> Callable[[], Awaitable[Any]]: ...


class Incoming:
    """An ASGI request's headers (names lower-case, the first of repeated ones, decoded
    as Latin-1: what Litestar's `Headers.get` answers) and its `receive`."""

    __slots__ = ("_receive", "_scope", "headers")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers: Mapping[str, str] = headers

    @property
    def receive(self) -> Receive:
        return self._receive

    @property
    def state(self) -> Any:
        """The app's state (its gateway and metrics), as `request.app.state` is."""
        return self._scope["app"].state
