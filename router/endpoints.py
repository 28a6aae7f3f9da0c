"""The OpenAI inference endpoints: the OpenAI door over HTTP. Handlers are thin: they
authenticate, read the body and hand it to the one pipeline (router/pipeline.py), then
frame the result; a stream is relayed here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request, Response, post

from policies.errors import ApiError
from policies.fan_out_cost import prompt_reads
from policies.limit_set import Reservation
from policies.trace import Trace
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import CACHE, RequestRecord
from router.auth import authenticate
from router.body import client_closed, read_json_object
from router.closing_stream import ClosingStream
from router.gateway import Gateway, PolicyObserver
from router.pipeline import PipelineRun, total_tokens, unsettled
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest
from router.sse import StreamEnd, estimated_usage, sse_frames, wants_usage

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
# Frames a relayed stream of chat chunks for the client (router/sse.py's `sse_frames`).
Framer = Callable[[AsyncIterator[JSONObject], StreamEnd, bool], AsyncIterator[bytes]]
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@post("/v1/completions", status_code=200)
async def completions(request: AnyRequest) -> Response[Any]:
    return await _serve(request, Endpoint.COMPLETIONS, CompletionRequest)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest) -> Response[Any]:
    return await _serve(request, Endpoint.CHAT, ChatCompletionRequest)


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest) -> Response[Any]:
    return await _serve(request, Endpoint.EMBEDDINGS, EmbeddingRequest)


ROUTES = [completions, chat_completions, embeddings]


async def _serve(
    request: AnyRequest, endpoint: Endpoint, schema: type[OpenAIRequest]
) -> Response[Any]:
    """The OpenAI door over HTTP: authenticate, read the body, and hand both to the one
    pipeline (router/pipeline.py); a stream is relayed here as it comes."""
    gateway: Gateway = request.app.state.gateway
    run = PipelineRun.begin(
        gateway, _observer(request), endpoint, request.headers.get("x-request-id")
    )
    try:
        # Admitted from the headers, before any byte of the body: a refused key holds no
        # connection while it sends one.
        await run.admit(authenticate(request, gateway))
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        forward = await run.prepare(schema, body, request.headers)
        if body.get("stream") is True:
            response = await stream_answer(request, gateway, run.record, endpoint, forward, run)
            run.streaming = True
            return response
        content, headers = await run.answer(
            forward, body.get("cache"), lambda work: unless_disconnected(request, work)
        )
    except (ApiError, UpstreamError) as exc:
        failure = await run.fail(exc)
        return Response(
            failure.body,
            status_code=failure.status,
            media_type="application/json",
            headers=failure.headers,
        )
    except Exception as exc:  # a bug: outages of the shared store are met by failing open
        run.crashed(exc)
        raise  # router.errors answers the envelope and logs the traceback
    finally:
        await run.end()
    return Response(content, media_type="application/json", headers=headers)


async def stream_answer(
    request: AnyRequest,
    gateway: Gateway,
    record: RequestRecord,
    endpoint: Endpoint,
    forward: dict[str, Any],
    run: PipelineRun,
    framer: Framer = sse_frames,
) -> Response[Any]:
    """Open the stream (failing over until a first chunk) and relay it, framed by
    `framer` (chat's SSE; another door's events); the limits are settled on its usage
    once it ends, however it ends."""
    route, trace = record.route, record.trace
    assert route is not None  # set by _serve before it streams
    assert trace is not None
    record.stream = True
    if gateway.cache is not None:
        record.extra_headers[CACHE] = "bypass"
        _observer(request).cache("bypass")
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
        # A client gone mid-stream is logged as 499, as one gone before its answer is.
        status = 499 if outcome == "client_closed" else 200
        error = trace.stream_error
        record.emit(status, outcome=outcome, usage=usage, stream_error=error, **_continued(trace))

    frames = _after(
        framer(
            gateway.dispatcher.relay(opened, trace, (route.plan, endpoint, forward)),
            on_end,
            wants_usage(forward),
        ),
        lambda: _settle_and_release(gateway, run.reservation, ended.get("usage"), trace),
    )
    return ClosingStream(
        frames, media_type="text/event-stream", headers={**SSE_HEADERS, **record.headers()}
    )


async def _settle_and_release(
    gateway: Gateway, reservation: Reservation | None, usage: Any, trace: Trace
) -> None:
    """A stream's end, however it ends: its tokens settled (hedges that lost and attempts
    that failed before it included), its concurrency slots back. A client that went away
    ends the stream inside a cancelled scope: the settlement is shielded, so a shared
    store's round trip is not cut off with it."""
    try:
        await asyncio.shield(
            gateway.limiter.settle(reservation, total_tokens(usage), unsettled(trace))
        )
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


def _observer(request: AnyRequest) -> PolicyObserver:
    metrics: PolicyObserver = request.app.state.metrics
    return metrics


async def _after(
    frames: AsyncIterator[bytes], then: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """`frames`, then `then()` once they end however they end (the client may go away)."""
    try:
        async for item in frames:
            yield item
    finally:
        await then()


async def unless_disconnected(request: AnyRequest, work: Awaitable[T]) -> T:
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


async def _disconnected(request: AnyRequest) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
