"""The app Turnout serves: Litestar, with a POST to one of the three hot OpenAI paths
(router/endpoints.py's `HOT_POSTS`) answered before Litestar's router.

Litestar's entry, exception middleware (which wraps every `send`) and router cost ~6 % of
a relayed request's CPU (bench/README.md, "The hot path"). Every other request, and these
paths spelled otherwise (a trailing slash) or with another method, take Litestar's way,
which routes them to the same handlers. An exception a hot door raises before its answer
starts is answered by the app's exception handlers (router.errors), as Litestar would."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.types import Receive, Scope, Send

from router.endpoints import HOT_POSTS
from router.incoming import Incoming


class TurnoutApp(Litestar):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        door = HOT_POSTS.get(scope["path"]) if scope["type"] == "http" else None
        # What Litestar's way would add (middleware, send hooks) is never skipped.
        if door is None or scope["method"] != "POST" or self.middleware or self.before_send:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = scope["litestar_app"] = self
        scope.setdefault("state", {})
        try:
            answer = await door(Incoming(scope, receive))
        except Exception as exc:  # nothing was sent yet
            await self._answer_exception(scope, receive, send, exc)
            return
        await answer(scope, receive, send)

    async def _answer_exception(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception
    ) -> None:
        """What Litestar's exception middleware answers: the handler registered for the
        nearest class of `exc` (router.errors: the envelope, a bug's traceback logged)."""
        handlers = self.exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise exc
        request: Request[Any, Any, Any] = Request(scope, receive)
        response = handler(request, exc)
        await response.to_asgi_response(app=None, request=request)(scope, receive, send)
