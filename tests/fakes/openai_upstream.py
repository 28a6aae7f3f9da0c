"""A real loopback HTTP/1.1 server that speaks OpenAI's wire format and misbehaves on demand.

Raw asyncio (not aiohttp) so it can RST connections, split writes and cut chunked bodies.
It runs its own event loop in a daemon thread, so sync and async tests can both use it::

    with FakeOpenAIUpstream() as up:
        up.enqueue(rate_limited(retry_after="1"), Ok(text="hi"))
        ...  # point the client at up.base_url
        assert up.requests[-1].json["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, NoReturn

from .behaviors import (
    MID_STREAM_ERROR,
    Behavior,
    CutStream,
    EchoHeaders,
    EchoInChoices,
    EchoVariants,
    MalformedEvent,
    MidStreamError,
    Ok,
    Oversized,
    Reset,
    Silence,
    StallMidStream,
    Status,
    ToolCall,
    content_policy_violation,
    context_length_exceeded,
    rate_limited,
)
from .wire import (
    ROUTES,
    InvalidRequest,
    Json,
    chat_tool_call,
    dumps,
    invalid,
    model_object,
    rest_after_prefill,
)

__all__ = [
    "MID_STREAM_ERROR",
    "Behavior",
    "ClientClose",
    "CutStream",
    "EchoHeaders",
    "EchoInChoices",
    "EchoVariants",
    "FakeOpenAIUpstream",
    "MalformedEvent",
    "MidStreamError",
    "Ok",
    "Oversized",
    "RecordedRequest",
    "Reset",
    "Silence",
    "StallMidStream",
    "Status",
    "ToolCall",
    "content_policy_violation",
    "context_length_exceeded",
    "rate_limited",
]

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. ``json`` is the parsed body (None if absent/invalid)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any
    time: float  # time.monotonic() when the request head arrived
    connection_id: int  # same value ⇔ same TCP connection (keep-alive reuse)


@dataclass(frozen=True)
class ClientClose:
    """The client closed the connection while ``request`` was still being answered."""

    request: RecordedRequest
    time: float  # time.monotonic() when the server noticed (polled every 10 ms)


class _Drop(Exception):
    """Abandon the connection without (further) response."""


def _head(code: int, headers: dict[str, str], extra: Mapping[str, str]) -> bytes:
    merged = {k: v for k, v in headers.items() if k not in {e.lower() for e in extra}} | dict(extra)
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {code} {reason}", *(f"{k}: {v}" for k, v in merged.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _mid_character(data: bytes) -> int:
    """Where to cut `data` in two: inside its first multibyte character, else halfway."""
    for i, byte in enumerate(data):
        if byte >= 0xC0:  # a multibyte character's lead byte: cut after it
            return i + 1
    return len(data) // 2


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _endless_line(writer: asyncio.StreamWriter, size: int) -> None:
    """`data: ` and `size` bytes with no newline, 64 KiB to a write, each flushed."""
    writer.write(_chunk(b"data: "))
    piece = b"x" * (1 << 16)
    for start in range(0, size, len(piece)):
        writer.write(_chunk(piece[: size - start]))
        await writer.drain()


async def _rst(writer: asyncio.StreamWriter) -> NoReturn:
    """Abort the connection with a TCP RST (after flushing what was already written)."""
    await writer.drain()  # write buffer limit is 0: this waits until the kernel has it all
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    raise _Drop


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
) -> RecordedRequest | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _Drop from exc
        return None  # clean EOF between requests
    arrived = time.monotonic()
    request_line, *lines = raw.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise _Drop
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pieces = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while (await reader.readuntil(b"\r\n")) != b"\r\n":
            pass  # trailers
        body = b"".join(pieces)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    path, _, query = target.partition("?")
    return RecordedRequest(method.upper(), path, query, headers, body, parsed, arrived, conn)


class FakeOpenAIUpstream:
    """OpenAI-compatible fake upstream on 127.0.0.1 in a background thread (see module doc)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, models: Sequence[str] = DEFAULT_MODELS
    ) -> None:
        self.host, self._port, self.models = host, port, tuple(models)
        self._cond = threading.Condition()
        self._queue: deque[Behavior] = deque()
        self._default: Behavior = Ok()
        self._models_behavior: Behavior = Ok()
        self._requests: list[RecordedRequest] = []
        self._client_closes: list[ClientClose] = []
        self._in_flight = 0  # requests (model lists aside) being answered right now
        self._max_in_flight = 0
        self._ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # ---- control API (any thread) -------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAIUpstream is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def enqueue(self, *behaviors: Behavior) -> None:
        """Queue behaviours, consumed FIFO by every request except GET /v1/models[/*]."""
        with self._cond:
            self._queue.extend(behaviors)

    def set_default(self, behavior: Behavior) -> None:
        """Behaviour used when the queue is empty (initially ``Ok()``)."""
        with self._cond:
            self._default = behavior

    def set_models_behavior(self, behavior: Behavior) -> None:
        """Behaviour of every GET /v1/models[/*] (initially ``Ok()``: the model list)."""
        with self._cond:
            self._models_behavior = behavior

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received (GET /v1/models included), oldest first."""
        with self._cond:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"got {len(self._requests)} requests, wanted {count}")
            return list(self._requests)

    @property
    def max_in_flight(self) -> int:
        """The most requests (GET /v1/models aside) answered at once since the start or the
        last ``reset``: a request counts from its head's arrival to its response's end."""
        with self._cond:
            return self._max_in_flight

    @property
    def client_closes(self) -> list[ClientClose]:
        """Connections the client closed before its response was complete, oldest first."""
        with self._cond:
            return list(self._client_closes)

    def wait_for_client_closes(self, count: int, timeout: float = 5.0) -> list[ClientClose]:
        """Block until the client closed at least ``count`` unfinished responses."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._client_closes) >= count, timeout):
                raise TimeoutError(f"got {len(self._client_closes)} closes, wanted {count}")
            return list(self._client_closes)

    def reset(self) -> None:
        """Clear the queue and the recorded requests; restore the ``Ok()`` defaults."""
        with self._cond:
            self._queue.clear()
            self._requests.clear()
            self._client_closes.clear()
            self._max_in_flight = self._in_flight
            self._default = self._models_behavior = Ok()

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeOpenAIUpstream:
        if self._loop is not None:
            raise RuntimeError("already started")
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="fake-openai-upstream", daemon=True
        )
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._on_connection, self.host, self._port, limit=1 << 20), loop
        ).result(timeout=10)
        self._port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._server = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        me = asyncio.current_task()
        for _ in range(3):  # cancel silenced/stalled handlers, then let transports close
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)

    def __enter__(self) -> FakeOpenAIUpstream:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ---- server side (event-loop thread) -----------------------------------------------
    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.transport.set_write_buffer_limits(high=0)  # drain() == "flushed to the kernel"
        conn = next(self._conn_ids)
        try:
            while (req := await _read_request(reader, writer, conn)) is not None:
                with self._cond:
                    self._requests.append(req)
                    self._cond.notify_all()
                    models = req.method == "GET" and (
                        req.path == "/v1/models" or req.path.startswith("/v1/models/")
                    )
                    behavior = (
                        self._models_behavior
                        if models
                        else (self._queue.popleft() if self._queue else self._default)
                    )
                    if not models:
                        self._in_flight += 1
                        self._max_in_flight = max(self._max_in_flight, self._in_flight)
                keep = "close" not in req.headers.get("connection", "").lower()
                watcher = asyncio.create_task(self._watch_client_close(req, reader, writer))
                try:
                    await self._respond(req, behavior, writer, keep)
                except ConnectionError:
                    self._note_client_close(req)
                    raise
                finally:
                    watcher.cancel()
                    if not models:
                        with self._cond:
                            self._in_flight -= 1
                if not keep:
                    break
        except (
            _Drop,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass
        except asyncio.CancelledError:
            pass  # stop(); on 3.11 a cancelled connection task makes asyncio log an error
        finally:
            writer.close()

    async def _watch_client_close(
        self, req: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Poll for the client's FIN or RST while ``req`` is being answered (asyncio has
        no event for a peer's FIN that does not consume the stream)."""
        while not (  # noqa: ASYNC110 - see the docstring
            reader.at_eof() or reader.exception() is not None or writer.transport.is_closing()
        ):
            await asyncio.sleep(0.01)
        self._note_client_close(req)

    def _note_client_close(self, req: RecordedRequest) -> None:
        with self._cond:
            if all(c.request is not req for c in self._client_closes):
                self._client_closes.append(ClientClose(req, time.monotonic()))
                self._cond.notify_all()

    async def _respond(
        self, req: RecordedRequest, b: Behavior, writer: asyncio.StreamWriter, keep: bool
    ) -> None:
        base = {
            "x-request-id": f"req_{next(self._ids)}",
            "connection": "keep-alive" if keep else "close",
        }
        if isinstance(b, Reset):
            await _rst(writer)
        if isinstance(b, Silence):
            await asyncio.sleep(b.seconds)
            raise _Drop
        if isinstance(b, EchoHeaders):
            address = f"{self.host}:{self._port}"
            streams = isinstance(req.json, dict) and req.json.get("stream") is True
            if b.after_events is not None and streams:
                b = MidStreamError(b.after_events, b.message(req.headers, address))
            else:
                b = b.reply(req.headers, address)
        if isinstance(b, EchoVariants | EchoInChoices):
            b = b.reply(req.headers)
        if isinstance(b, Status):
            payload = b.payload()
            headers = {
                **base,
                "content-type": "application/json",
                "content-length": str(len(payload)),
            }
            writer.write(_head(b.code, headers, b.headers) + payload)
            return await writer.drain()
        ok = b if isinstance(b, Ok) else Ok(text=getattr(b, "text", None))
        if isinstance(b, Oversized) and not (isinstance(req.json, dict) and req.json.get("stream")):
            ok = Ok(text=(b.text or "") + "x" * b.size)
        if ok.delay:
            await asyncio.sleep(ok.delay)
        try:
            if isinstance(b, ToolCall):
                result = self._tool_call(req, b)
            else:
                text = rest_after_prefill(req.json, ok.text) if ok.prefill else ok.text
                result = self._answer(req, text)
        except InvalidRequest as exc:
            return await self._respond(req, exc.status, writer, keep)
        except Exception as exc:  # a bug in the fake: make it loud
            return await self._respond(
                req, Status(500, message=f"fake upstream bug: {exc!r}"), writer, keep
            )
        if isinstance(result, list):
            return await self._stream(result, b, ok, writer, base)
        body = dumps(result).encode()
        if isinstance(b, MalformedEvent):
            body = b"{this is not json"
        elif isinstance(b, MidStreamError):
            body = b.payload().encode()
        writer.write(
            _head(
                200,
                {**base, "content-type": "application/json", "content-length": str(len(body))},
                ok.headers,
            )
        )
        if isinstance(b, StallMidStream | CutStream):
            writer.write(body[: len(body) // 2])
            if isinstance(b, CutStream):
                await writer.drain()
                await asyncio.sleep(b.pause)
                await _rst(writer)
            await writer.drain()
            await asyncio.sleep(b.seconds)
            body = body[len(body) // 2 :]
        writer.write(body)
        await writer.drain()

    def _answer(self, req: RecordedRequest, text: str | None) -> Json | list[str]:
        if req.method == "GET" and req.path == "/v1/models":
            return {"object": "list", "data": [model_object(m) for m in self.models]}
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            model = req.path.removeprefix("/v1/models/")
            if model not in self.models:
                raise InvalidRequest(
                    Status(
                        404,
                        message=f"The model '{model}' does not exist",
                        code_str="model_not_found",
                    )
                )
            return model_object(model)
        route = ROUTES.get(req.path)
        if route is None or req.method != "POST":
            raise invalid(f"Invalid URL ({req.method} {req.path})", code=404)
        if not isinstance(req.json, dict):
            raise invalid("We could not parse the JSON body of your request.")
        return route(req.json, text)

    def _tool_call(self, req: RecordedRequest, call: ToolCall) -> Json | list[str]:
        if req.method != "POST" or req.path != "/v1/chat/completions":
            raise invalid(f"ToolCall answers chat completions only, not {req.method} {req.path}")
        if not isinstance(req.json, dict):
            raise invalid("We could not parse the JSON body of your request.")
        return chat_tool_call(req.json, call)

    async def _stream(
        self, events: list[str], b: Behavior, ok: Ok, w: asyncio.StreamWriter, base: dict[str, str]
    ) -> None:
        headers = {
            **base,
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
        }
        w.write(_head(200, {**headers, "transfer-encoding": "chunked"}, ok.headers))
        if isinstance(b, MalformedEvent):
            events = [*events[: b.after_events], "{this is not json", *events[b.after_events :]]
        elif isinstance(b, MidStreamError):
            events = [*events[: b.after_events], b.payload(), "[DONE]"]
        elif isinstance(b, Oversized):
            events = events[: b.after_events]
        elif ok.no_done:
            events = events[:-1]
        elif ok.end_after is not None:
            events = events[: ok.end_after]
        nl = "\r\n" if ok.crlf else "\n"
        if ok.first_delay:
            await w.drain()  # the head goes out; the first token is what is late
            await asyncio.sleep(ok.first_delay)
        for i, payload in enumerate([*events, None]):
            if isinstance(b, StallMidStream | CutStream) and i == min(b.after_events, len(events)):
                if isinstance(b, CutStream):
                    if b.partial and payload is not None:  # raw UTF-8, as vLLM sends it
                        raw = json.dumps(json.loads(payload), ensure_ascii=False)
                        data = f"data: {raw}{nl}{nl}".encode()
                        w.write(_chunk(data[: _mid_character(data)]))
                    await w.drain()
                    await asyncio.sleep(b.pause)
                    await _rst(w)
                await w.drain()
                await asyncio.sleep(b.seconds)
            if payload is None:
                break
            if i and ok.chunk_delay:
                await w.drain()
                await asyncio.sleep(ok.chunk_delay)
            comment = f": keep-alive{nl}{nl}" if i and ok.comments else ""
            data = f"{comment}data: {payload}{nl}{nl}".encode()
            if ok.split:
                mid = len(comment) + (len(payload) + 6) // 2
                w.write(_chunk(data[:mid]))
                await w.drain()
                await asyncio.sleep(0.005)
                data = data[mid:]
            w.write(_chunk(data))
        if isinstance(b, Oversized):
            await _endless_line(w, b.size)
        w.write(b"0\r\n\r\n")
        await w.drain()
