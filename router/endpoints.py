"""The OpenAI inference endpoints. Handlers are thin: authenticate, validate, plan,
hand to the dispatcher, frame the result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from litestar import Request, Response, post
from litestar.response import Stream

from policies.errors import ApiError
from policies.translation import Mode
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import RequestRecord
from router.auth import authenticate
from router.body import read_json_object, validate
from router.errors import from_api_error, from_upstream_error
from router.gateway import Gateway
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest, forwardable
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest
from router.sse import sse_frames

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
        endpoint.value, request.headers.get("x-request-id"), gateway.new_request_id
    )
    try:
        authenticate(request, gateway)
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        record.model = body.get("model") if isinstance(body.get("model"), str) else None
        parsed = validate(schema, body)
        plan = gateway.planner.plan(parsed.model, parsed.fallbacks or ())
        record.trace = trace = gateway.dispatcher.start_trace(plan)
        if parsed.router is not None and parsed.router.translation is not None:
            trace.mode = Mode(parsed.router.translation)
        forward = forwardable(body)
        if body.get("stream") is True:
            record.stream = True
            opened = await _unless_disconnected(
                request, gateway.dispatcher.open_stream(plan, endpoint, forward, trace)
            )
            frames = sse_frames(
                gateway.dispatcher.relay(opened, trace),
                lambda outcome, usage: record.emit(
                    200, outcome=outcome, usage=usage, stream_error=trace.stream_error
                ),
            )
            return Stream(
                frames, media_type="text/event-stream", headers={**SSE_HEADERS, **record.headers()}
            )
        answer = await _unless_disconnected(
            request, gateway.dispatcher.complete(plan, endpoint, forward, trace)
        )
    except ApiError as exc:
        record.emit(exc.status, outcome="rejected", error=exc.code or exc.type)
        return _with_headers(from_api_error(exc), record)
    except UpstreamError as exc:
        record.emit(exc.status, outcome="failed", error=exc.summary())
        return _with_headers(from_upstream_error(exc), record)
    result: JSONObject = answer.body
    if trace.target is not None and "model" not in result:
        result["model"] = trace.target.deployment.model
    record.emit(200, usage=result.get("usage"))
    return Response(orjson.dumps(result), media_type="application/json", headers=record.headers())


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
            raise ApiError(
                "The client closed the connection.", status=499, code="client_closed"
            ) from None
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
