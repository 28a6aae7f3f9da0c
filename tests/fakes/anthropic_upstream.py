"""A real loopback HTTP server that speaks Anthropic's Messages API and misbehaves on demand.

aiohttp.web on its own event loop in a daemon thread, so sync and async tests can both use
it. Each `POST /v1/messages` consumes one scripted behaviour (FIFO, then the default);
`GET /v1/models` lists `models` (or answers `set_models_status`)::

    with FakeAnthropicUpstream() as up:
        up.enqueue(Overloaded(), Reply(text="hi"))
        ...  # point an `anthropic` provider at up.base_url
        assert up.requests[-1].headers["x-api-key"] == "sk-ant-test"
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias

from aiohttp import web

__all__ = [
    "AnthropicStatus",
    "CutStream",
    "FakeAnthropicUpstream",
    "MidStreamError",
    "Recorded",
    "Reply",
    "ToolUse",
    "overloaded",
    "prompt_too_long",
    "rate_limited",
]


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: Mapping[str, Any]
    id: str = "toolu_01"


@dataclass(frozen=True)
class Reply:
    """A normal answer: JSON, or the named SSE events when the request streams.

    ``tool`` adds a `tool_use` block after the text (``stop_reason`` becomes `tool_use`);
    its streamed input arrives as `input_json_delta` fragments split mid-JSON.
    ``prefill``: a final assistant message is a prefill, continued as Anthropic does: the
    answer is the rest of ``text`` after it (a 400 when it ends in whitespace, as
    Anthropic's, or does not begin ``text``). ``usage``: more counts in the answer's usage
    (and in `message_start`'s), e.g. `cache_read_input_tokens`."""

    text: str = "Hello from Claude"
    tool: ToolUse | None = None
    stop_reason: str | None = None
    prefill: bool = False
    usage: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AnthropicStatus:
    """An error status with Anthropic's error body. ``echo_headers``: the message goes on
    with the upstream's address and every request header (`x-api-key` included), as a
    careless proxy in front of Anthropic might write it."""

    code: int
    type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    echo_headers: bool = False


@dataclass(frozen=True)
class MidStreamError:
    """Stream ``after_events`` events, then `event: error` (overloaded) and close.
    ``echo_headers``: its message echoes the request's headers (see `AnthropicStatus`)."""

    after_events: int = 3
    type: str = "overloaded_error"
    echo_headers: bool = False
    text: str = "Hello from Claude"
    tool: ToolUse | None = None


@dataclass(frozen=True)
class CutStream:
    """Stream ``after_events`` events, then end the body cleanly: no `message_stop`."""

    after_events: int = 4


Behavior: TypeAlias = Reply | AnthropicStatus | MidStreamError | CutStream

# (id, display_name, created_at) as the Models API lists them, newest first.
DEFAULT_MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
)


def overloaded() -> AnthropicStatus:
    return AnthropicStatus(529, "overloaded_error", "Overloaded")


def rate_limited(retry_after: str = "0") -> AnthropicStatus:
    return AnthropicStatus(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
        {"retry-after": retry_after},
    )


def prompt_too_long() -> AnthropicStatus:
    return AnthropicStatus(
        400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any
    method: str = "POST"


class FakeAnthropicUpstream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Behavior] = deque()
        self._requests: list[Recorded] = []
        self._models_status: AnthropicStatus | None = None
        self.models = DEFAULT_MODELS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *behaviors: Behavior) -> None:
        with self._lock:
            self._queue.extend(behaviors)

    def set_models_status(self, status: AnthropicStatus | None) -> None:
        """Answer every GET /v1/models with `status` (None: the model list again)."""
        with self._lock:
            self._models_status = status

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeAnthropicUpstream:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeAnthropicUpstream:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- server side -------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        """The Models API's first page: every model, newest first, no more pages."""
        with self._lock:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._requests.append(Recorded(request.path, headers, None, request.method))
            status = self._models_status
        if status is not None:
            return _error_response(status)
        data = [
            {"type": "model", "id": model, "display_name": name, "created_at": created}
            for model, name, created in self.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's count: here one token per word of every text, plus 3 per message.
        `max_tokens` is refused, as Anthropic's endpoint refuses it."""
        body = await request.json()
        with self._lock:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self._requests.append(Recorded(request.path, headers, body))
        if "max_tokens" in body:
            refused = AnthropicStatus(400, "invalid_request_error", "max_tokens: Extra inputs")
            return _error_response(refused)
        words = len(json.dumps([body.get("system"), body.get("messages")]).split())
        return web.json_response({"input_tokens": words + 3 * len(body.get("messages") or [])})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self._requests.append(
                Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
            )
            behavior = self._queue.popleft() if self._queue else Reply()
        if isinstance(behavior, AnthropicStatus):
            return _error_response(behavior, self._echo(request, behavior.echo_headers))
        reply = (
            behavior
            if isinstance(behavior, Reply)
            else Reply(text=behavior.text, tool=behavior.tool)
            if isinstance(behavior, MidStreamError)
            else Reply()
        )
        if reply.prefill:
            refusal, reply = _after_prefill(body, reply)
            if refusal is not None:
                return _error_response(refusal)
        if not body.get("stream"):
            return web.json_response(message(body, reply))
        events = stream_events(body, reply)
        if isinstance(behavior, MidStreamError):
            said = "Overloaded" + self._echo(request, behavior.echo_headers)
            error = {"type": "error", "error": {"type": behavior.type, "message": said}}
            events = [*events[: behavior.after_events], ("error", error)]
        if isinstance(behavior, CutStream):
            events = events[: behavior.after_events]
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response

    def _echo(self, request: web.Request, wanted: bool) -> str:
        """What a careless upstream appends to its error message: nothing, unless wanted."""
        if not wanted:
            return ""
        dump = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
        key = request.headers.get("x-api-key", "none")
        return (
            f": invalid x-api-key {key}, lower={key.lower()}"
            f" (served by 127.0.0.1:{self.port}; headers: {dump})"
        )


def _after_prefill(body: Mapping[str, Any], reply: Reply) -> tuple[AnthropicStatus | None, Reply]:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant":
        return None, reply
    content = last.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    partial = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    if partial != partial.rstrip():
        message = "messages: final assistant content cannot end with trailing whitespace"
        return AnthropicStatus(400, "invalid_request_error", message), reply
    if not reply.text.startswith(partial):
        message = f"prefill {partial!r} does not begin the answer"
        return AnthropicStatus(400, "invalid_request_error", message), reply
    return None, Reply(text=reply.text[len(partial) :], tool=reply.tool, usage=reply.usage)


def _error_response(status: AnthropicStatus, echoed: str = "") -> web.Response:
    said = status.message + echoed
    error = {"type": "error", "error": {"type": status.type, "message": said}}
    return web.json_response(error, status=status.code, headers=dict(status.headers))


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
    if reply.tool is not None:
        blocks.append(
            {
                "type": "tool_use",
                "id": reply.tool.id,
                "name": reply.tool.name,
                "input": dict(reply.tool.input),
            }
        )
    return blocks


def _stop_reason(reply: Reply) -> str:
    return reply.stop_reason or ("tool_use" if reply.tool else "end_turn")


def message(body: Mapping[str, Any], reply: Reply) -> dict[str, Any]:
    """The whole (non-streamed) Messages API answer."""
    return {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": _blocks(reply),
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": len(reply.text.split()), **reply.usage},
    }


def stream_events(body: Mapping[str, Any], reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    """Named events in Anthropic's documented order, a `ping` included."""
    start = {**message(body, reply), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 12, "output_tokens": 1, **reply.usage}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for word in _pieces(reply.text):
        delta = {"type": "text_delta", "text": word}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if reply.tool is not None:
        block = {"type": "tool_use", "id": reply.tool.id, "name": reply.tool.name, "input": {}}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": 1, "content_block": block},
            )
        )
        raw = json.dumps(dict(reply.tool.input))
        cuts = [0, 0, len(raw) // 3, 2 * len(raw) // 3, len(raw)]  # an empty first fragment
        for a, b in itertools.pairwise(cuts):
            delta = {"type": "input_json_delta", "partial_json": raw[a:b]}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": len(reply.text.split())},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0], *(f" {w}" for w in words[1:])]
