"""The OpenAI inference endpoints: the OpenAI door over HTTP. Handlers are thin: they
authenticate, read the body and hand it to the one pipeline (router/pipeline.py), then
frame the result; a stream is relayed here.

They are ASGI handlers (`@asgi`), not Litestar's request/response handlers: routed by
Litestar, behind its exception handlers, but reading the scope through
`router.incoming.Incoming` and answering with ASGI messages (a stream through
`router.sse_answer.StreamAnswer`). These three carry nearly every request a gateway
serves; Litestar's request, signature and response machinery cost ~11 % of the CPU of
each (bench/README.md, "The hot path")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from litestar import Response, asgi
from litestar.exceptions import MethodNotAllowedException
from litestar.types import ASGIApp, Receive, Scope, Send

from policies.errors import ApiError
from policies.fan_out_cost import prompt_reads
from policies.limit_set import Reservation
from policies.pricing.cost import request_cost
from policies.trace import Trace
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import CACHE, RequestRecord
from router.auth import authenticate
from router.body import client_closed, read_json_object
from router.closing_stream import ClosingStream
from router.cost_report import with_cost
from router.gateway import Gateway
from router.incoming import HTTPRequest, Incoming
from router.pipeline import PipelineRun, answered, priced, total_tokens, unsettled
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest
from router.sse import StreamEnd, estimated_usage, sse_frames, wants_usage
from router.sse_answer import StreamAnswer, raw_headers

T = TypeVar("T")
# Frames a relayed stream of chat chunks for the client (router/sse.py's `sse_frames`).
Framer = Callable[[AsyncIterator[JSONObject], StreamEnd, bool], AsyncIterator[bytes]]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# What Litestar answers for a POST-only route: OPTIONS lists it, other methods get 405.
_ALLOWED = "OPTIONS, POST"
_NOT_ALLOWED = "POST, OPTIONS"


@asgi("/v1/completions", copy_scope=False)
async def completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _door(scope, receive, send, Endpoint.COMPLETIONS, CompletionRequest)


@asgi("/v1/chat/completions", copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _door(scope, receive, send, Endpoint.CHAT, ChatCompletionRequest)


@asgi("/v1/embeddings", copy_scope=False)
async def embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await _door(scope, receive, send, Endpoint.EMBEDDINGS, EmbeddingRequest)


ROUTES = [completions, chat_completions, embeddings]
# A POST to one of these paths, answered before Litestar's router (router.hot_app): the
# request's answer as ASGI messages, made by the one pipeline.
HOT_POSTS: dict[str, Callable[[Incoming], Awaitable[ASGIApp]]] = {
    "/v1/completions": lambda r: serve(r, Endpoint.COMPLETIONS, CompletionRequest),
    "/v1/chat/completions": lambda r: serve(r, Endpoint.CHAT, ChatCompletionRequest),
    "/v1/embeddings": lambda r: serve(r, Endpoint.EMBEDDINGS, EmbeddingRequest),
}


async def _door(
    scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, schema: type[OpenAIRequest]
) -> None:
    method = scope.get("method")
    if method == "POST":
        answer = await serve(Incoming(scope, receive), endpoint, schema)
        await answer(scope, receive, send)
    elif method == "OPTIONS":
        await _send(send, 204, b"", {"allow": _ALLOWED}, None)
    else:  # answered by router.errors, as Litestar's own 405 is
        raise MethodNotAllowedException(headers={"allow": _NOT_ALLOWED})


async def serve(request: Incoming, endpoint: Endpoint, schema: type[OpenAIRequest]) -> ASGIApp:
    """The OpenAI door over HTTP: authenticate, read the body, and hand both to the one
    pipeline (router/pipeline.py); a stream is relayed here as it comes."""
    state = request.state
    gateway: Gateway = state.gateway
    run = PipelineRun.begin(gateway, state.metrics, endpoint, request.headers.get("x-request-id"))
    try:
        # Admitted from the headers, before any byte of the body: a refused key holds no
        # connection while it sends one.
        await run.admit(authenticate(request, gateway))
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        forward = await run.prepare(schema, body, request.headers)
        if body.get("stream") is True:
            frames, headers = await relayed_stream(
                request, gateway, run.record, endpoint, forward, run
            )
            run.streaming = True
            return StreamAnswer(frames, headers)
        content, headers = await run.answer(
            forward, body.get("cache"), lambda work: unless_disconnected(request, work)
        )
    except (ApiError, UpstreamError) as exc:
        failure = await run.fail(exc)
        return _JSONAnswer(failure.status, failure.body, failure.headers)
    except Exception as exc:  # a bug: outages of the shared store are met by failing open
        run.crashed(exc)
        raise  # router.errors answers the envelope and logs the traceback
    finally:
        await run.end()
    return _JSONAnswer(200, content, headers)


class _JSONAnswer:
    """A JSON answer as ASGI messages, with the headers Litestar's `Response` would send."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send(send, self.status, self.body, self.headers, b"application/json")


async def _send(
    send: Send, status: int, body: bytes, headers: dict[str, str], media_type: bytes | None
) -> None:
    raw = raw_headers(headers)
    if media_type is not None:
        raw.append((b"content-type", media_type))
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def stream_answer(
    request: HTTPRequest,
    gateway: Gateway,
    record: RequestRecord,
    endpoint: Endpoint,
    forward: dict[str, Any],
    run: PipelineRun,
    framer: Framer = sse_frames,
) -> Response[Any]:
    """`relayed_stream` as Litestar's streaming response (the other doors' handlers)."""
    frames, headers = await relayed_stream(request, gateway, record, endpoint, forward, run, framer)
    return ClosingStream(frames, media_type="text/event-stream", headers=headers)


async def relayed_stream(
    request: HTTPRequest,
    gateway: Gateway,
    record: RequestRecord,
    endpoint: Endpoint,
    forward: dict[str, Any],
    run: PipelineRun,
    framer: Framer = sse_frames,
) -> tuple[AsyncGenerator[bytes, None], dict[str, str]]:
    """Open the stream (failing over until a first chunk) and relay it, framed by
    `framer` (chat's SSE; another door's events): its frames and response headers. The
    limits are settled on its usage once it ends, however it ends."""
    route, trace = record.route, record.trace
    assert route is not None  # set by `prepare` before a door streams
    assert trace is not None
    record.stream = True
    if gateway.cache is not None:
        record.extra_headers[CACHE] = "bypass"
        run.observer.cache("bypass")
    opened = await unless_disconnected(
        request, gateway.dispatcher.open_stream(route.plan, endpoint, forward, trace)
    )
    record.mark_first_chunk()
    ended: dict[str, Any] = {}

    def on_end(outcome: str, usage: Any, streamed_chars: int) -> None:
        # No usage came (a backend that cannot count, a cut): settle on an estimate.
        reads = prompt_reads(endpoint, trace.translation)  # each fanned-out call read it
        estimate = None if usage is not None else estimated_usage(forward, streamed_chars, reads)
        ended["usage"] = usage if estimate is None else estimate
        priced(gateway, record, ended["usage"])  # before the line is logged
        # A client gone mid-stream is logged as 499, as one gone before its answer is.
        status = 499 if outcome == "client_closed" else 200
        error = trace.stream_error
        record.emit(status, outcome=outcome, usage=usage, stream_error=error, **_continued(trace))

    include_usage = wants_usage(forward)
    if framer is sse_frames and include_usage:  # chat's usage chunk carries the cost too
        framer = partial(sse_frames, costed=lambda chunk: with_request_cost(gateway, trace, chunk))
    frames = _after(
        framer(
            gateway.dispatcher.relay(opened, trace, (route.plan, endpoint, forward)),
            on_end,
            include_usage,
        ),
        lambda: _settle_and_release(gateway, run.reservation, ended.get("usage"), record),
    )
    return frames, {**SSE_HEADERS, **record.headers()}


def with_request_cost(gateway: Gateway, trace: Trace, chunk: JSONObject) -> JSONObject:
    """A stream's usage chunk with what the request cost so far: every call before it is
    in the ledger (the usage's own call included), so this is the request's whole cost."""
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return chunk
    return with_cost(chunk, request_cost(trace.ledger, gateway.prices, answered(trace, usage)))


async def _settle_and_release(
    gateway: Gateway, reservation: Reservation | None, usage: Any, record: RequestRecord
) -> None:
    """A stream's end, however it ends: its tokens settled (hedges that lost and attempts
    that failed before it included), its concurrency slots back. A client that went away
    ends the stream inside a cancelled scope: the settlement is shielded, so a shared
    store's round trip is not cut off with it."""
    try:
        cost = record.cost or priced(gateway, record, usage)  # a stream that never ended
        settled = gateway.limiter.settle(
            reservation, total_tokens(usage), unsettled(record.trace), cost=cost
        )
        await asyncio.shield(settled)
    finally:
        await gateway.limiter.release(reservation)


def _continued(trace: Trace) -> dict[str, Any]:
    """The log's fields on a stream that broke: whether and how often it was continued."""
    if trace.continuation is None:
        return {}
    fields = {"continued": trace.continued, "continuation_outcome": trace.continuation}
    if trace.continuation_note is not None:
        fields["continuation_note"] = trace.continuation_note
    return fields


async def _after(
    frames: AsyncIterator[bytes], then: Callable[[], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    """`frames`, then `then()` once they end however they end (the client may go away)."""
    try:
        async for item in frames:
            yield item
    finally:
        await then()


async def unless_disconnected(request: HTTPRequest, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it the moment the client disconnects (it would be wasted).

    One watcher task per request; `work` runs in the handler's own task, which the
    watcher cancels, so the upstream call unwinds through its own cleanup."""
    handler = asyncio.current_task()
    if handler is None:  # pragma: no cover - always inside a task under an ASGI server
        return await work
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _disconnected(request)
        gone = True
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and handler.uncancel() == 0:
            raise client_closed() from None
        raise
    finally:
        watcher.cancel()


async def _disconnected(request: HTTPRequest) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
