"""The OpenAI inference endpoints. Handlers are thin: authenticate, validate, plan,
hand to the dispatcher, frame the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from litestar import Request, Response, post

from policies.cache import CacheChoice, ResponseCache
from policies.call_cost import unsettled_tokens
from policies.errors import ApiError
from policies.fan_out_cost import prompt_reads
from policies.limit_set import Reservation
from policies.trace import Trace
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import (
    ANSWERED_BY_MODEL,
    CACHE,
    CLAMPED,
    DEPLOYMENT,
    DROPPED,
    EMULATED,
    RequestRecord,
)
from router.auth import authenticate
from router.body import client_closed, read_json_object, validate
from router.closing_stream import ClosingStream
from router.errors import from_api_error, from_upstream_error
from router.fan_out_charge import admit_every_call
from router.gateway import Gateway, PolicyObserver
from router.routing_options import routing_choices
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest, forwardable
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest
from router.sse import estimated_usage, sse_frames, wants_usage

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
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
    gateway: Gateway = request.app.state.gateway
    record = RequestRecord.begin(
        endpoint.value,
        request.headers.get("x-request-id"),
        gateway.new_request_id,
        metrics=request.app.state.metrics,
        in_flight=gateway,
        redactor=gateway.redactor,
    )
    reservation: Reservation | None = None
    streaming = False  # once a stream is handed over, it gives back the slots at its end
    try:
        caller = record.caller = authenticate(request, gateway)
        # Counted from the headers, before any byte of the body: a refused key holds no
        # connection while it sends one.
        reservation = await gateway.limiter.admit_request(caller, _observer(request).limit_rejected)
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        record.model = body.get("model") if isinstance(body.get("model"), str) else None
        parsed = validate(schema, body)
        route = record.route = gateway.router.route(
            caller, body, request.headers, routing_choices(parsed)
        )
        record.trace = trace = gateway.dispatcher.start_trace(route.plan)
        forward = forwardable(body)
        reservation = await admit_every_call(
            gateway, reservation, record, endpoint, forward, _observer(request).limit_rejected
        )
        if body.get("stream") is True:
            response = await _stream(request, gateway, record, endpoint, forward, reservation)
            streaming = True
            return response
        cached = _Cached.choose(request, gateway, record, endpoint, forward, body.get("cache"))
        if cached is not None and (hit := await cached.lookup(record)) is not None:
            await gateway.limiter.settle(reservation, 0)
            record.emit(200, outcome="cache_hit")
            return Response(hit, media_type="application/json", headers=record.headers())
        answer = await _unless_disconnected(
            request, gateway.dispatcher.complete(route.plan, endpoint, forward, trace)
        )
    except ApiError as exc:  # 499: the client went away, which is no backend's failure
        # Upstream calls already made were billed however the request ended.
        await gateway.limiter.settle(reservation, 0, _unsettled(record.trace))
        outcome = "client_closed" if exc.status == 499 else "rejected"
        record.emit(exc.status, outcome=outcome, error=exc.code or exc.type)
        return _with_headers(from_api_error(exc), record)
    except UpstreamError as exc:
        await gateway.limiter.settle(reservation, 0, _unsettled(record.trace))
        # The client gets the masked error; the log also gets what the upstream said.
        record.emit(exc.status, outcome="failed", error=exc.summary(), upstream=exc.detail)
        return _with_headers(from_upstream_error(exc), record)
    except Exception as exc:  # a bug: outages of the shared store are met by failing open
        record.emit(500, outcome="error", error=type(exc).__name__)
        raise  # router.errors answers the envelope and logs the traceback
    finally:
        if not streaming:  # concurrency slots: this request is no longer in flight
            await gateway.limiter.release(reservation)
    result: JSONObject = answer.body
    if trace.target is not None and "model" not in result:
        result["model"] = trace.target.deployment.model
    usage = result.get("usage")
    await gateway.limiter.settle(reservation, total_tokens(usage), _unsettled(trace))
    if cached is not None:
        await cached.store(result, record)
    headers = record.headers()  # before the log line: it records what the client gets
    record.emit(200, usage=usage)
    return Response(orjson.dumps(result), media_type="application/json", headers=headers)


async def _stream(
    request: AnyRequest,
    gateway: Gateway,
    record: RequestRecord,
    endpoint: Endpoint,
    forward: dict[str, Any],
    reservation: Reservation | None,
) -> Response[Any]:
    """Open the stream (failing over until a first chunk) and relay it; the limits are
    settled on its usage once it ends, however it ends."""
    route, trace = record.route, record.trace
    assert route is not None  # set by _serve before it streams
    assert trace is not None
    record.stream = True
    if gateway.cache is not None:
        record.extra_headers[CACHE] = "bypass"
        _observer(request).cache("bypass")
    opened = await _unless_disconnected(
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
        sse_frames(
            gateway.dispatcher.relay(opened, trace, (route.plan, endpoint, forward)),
            on_end,
            wants_usage(forward),
        ),
        lambda: _settle_and_release(gateway, reservation, ended.get("usage"), trace),
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
            gateway.limiter.settle(reservation, total_tokens(usage), _unsettled(trace))
        )
    finally:
        await gateway.limiter.release(reservation)


def _unsettled(trace: Trace | None) -> int:
    """Tokens of the request's upstream calls that its answer (if any) does not count."""
    return 0 if trace is None else unsettled_tokens(trace.ledger)


def _continued(trace: Trace) -> dict[str, Any]:
    """The log's fields on a stream that broke: whether and how often it was continued."""
    if trace.continuation is None:
        return {}
    fields = {"continued": trace.continued, "continuation_outcome": trace.continuation}
    if trace.continuation_note is not None:
        fields["continuation_note"] = trace.continuation_note
    return fields


# The headers a cached answer replays: who answered it, and what was done to the request.
_REPLAYED = (DEPLOYMENT, ANSWERED_BY_MODEL, EMULATED, DROPPED, CLAMPED)


@dataclass(frozen=True, slots=True)
class _Cached:
    """One request's use of the response cache. The key is the normalized body and
    everything routing decided for it (model, deployments, translation mode), scoped to
    the team (a teamless key: to that key); an entry keeps the translation headers, so a
    hit says what the original answer did."""

    cache: ResponseCache
    choice: CacheChoice
    observer: PolicyObserver

    @classmethod
    def choose(
        cls,
        request: AnyRequest,
        gateway: Gateway,
        record: RequestRecord,
        endpoint: Endpoint,
        forward: dict[str, Any],
        options: Any,
    ) -> _Cached | None:
        cache, route, caller = gateway.cache, record.route, record.caller
        if cache is None or route is None or caller is None:
            return None
        plan = route.plan
        decided = "|".join(
            [endpoint.value, plan.model, plan.mode.value, *(t.label for t in plan.targets)]
        )
        scope = caller.team if caller.team is not None else f"key:{caller.key_id}"
        return cls(cache, cache.choose(scope, decided, forward, options), _observer(request))

    async def lookup(self, record: RequestRecord) -> bytes | None:
        entry = await self.cache.get(self.choice)
        self.observer.cache("miss" if entry is None else "hit")
        record.extra_headers[CACHE] = "miss" if entry is None else "hit"
        if entry is None:
            return None
        stored = orjson.loads(entry)
        record.extra_headers.update(stored["headers"])
        return orjson.dumps(stored["body"])

    async def store(self, result: JSONObject, record: RequestRecord) -> None:
        headers = {k: v for k, v in record.headers().items() if k in _REPLAYED}
        await self.cache.put(self.choice, orjson.dumps({"headers": headers, "body": result}))


def _observer(request: AnyRequest) -> PolicyObserver:
    metrics: PolicyObserver = request.app.state.metrics
    return metrics


def total_tokens(usage: Any) -> int | None:
    """Tokens a response used, from its `usage` (None when it reported none)."""
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    return sum(p for p in parts if isinstance(p, int)) if any(parts) else None


async def _after(
    frames: AsyncIterator[bytes], then: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """`frames`, then `then()` once they end however they end (the client may go away)."""
    try:
        async for item in frames:
            yield item
    finally:
        await then()


async def _unless_disconnected(request: AnyRequest, work: Awaitable[T]) -> T:
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


def _with_headers(response: Response[Any], record: RequestRecord) -> Response[Any]:
    for name, value in record.headers().items():
        response.headers[name] = value
    return response
