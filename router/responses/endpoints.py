"""The Responses API, a front door over the one pipeline: `POST /v1/responses`,
`GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`,
`GET /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`.

A request is checked (router/responses/schema.py), its `previous_response_id` expanded into
the conversation's earlier items (router/responses/conversation.py), and mapped to one chat
completions request (router/responses/to_chat.py) that runs through `PipelineRun` as any
chat does: team rules, limits, cache, plan, translation per deployment, retries, failover,
continuation of broken streams. The chat answer is mapped back: whole
(router/responses/from_chat.py) or as Responses events (router/responses/events.py). With
`store` (the default) the turn is stored before the client gets the final answer.

A deployment declaring `capabilities: {responses: true}` gets the Responses request itself
instead (policies/native.py); its answer, whole or streamed, is passed through under the
turn's own id (router/responses/native.py). What chat has no form for (a built-in tool)
is then dropped from the chat form only, and refused unless a deployment is native.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

import orjson
import structlog
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery

from policies.errors import ApiError
from policies.storage.base import StorageUnavailable
from policies.storage.factory import Storage
from policies.storage.response_store import ResponseRecord
from policies.teams import Caller
from policies.translation import Refusal
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import DROPPED
from router.auth import authenticate
from router.body import read_json_object, validate
from router.endpoints import Framer, stream_answer, unless_disconnected
from router.errors import envelope, stream_error_payload
from router.gateway import Gateway, PolicyObserver
from router.header_values import header_list
from router.pipeline import PipelineRun
from router.responses.conversation import earlier_items, store_turn
from router.responses.events import ResponseEvents, sse
from router.responses.from_chat import response_object
from router.responses.ids import new_id
from router.responses.native import (
    NativeEvents,
    chunk_chars,
    chunk_usage,
    is_response_event,
    native_request,
    own_response,
)
from router.responses.schema import ROUTING_FIELDS, ResponsesRequest
from router.responses.to_chat import chat_request, input_items
from router.schemas.chat import ChatCompletionRequest
from router.sse import StreamEnd
from router.stored import answer_json, not_found, owner_of, storage_of, unavailable

AnyRequest = Request[Any, Any, Any]
log = structlog.get_logger("turnout.responses")


@post("/v1/responses", status_code=200)
async def create_response(request: AnyRequest) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    observer: PolicyObserver = request.app.state.metrics
    run = PipelineRun.begin(
        gateway, observer, Endpoint.CHAT, request.headers.get("x-request-id"), label="responses"
    )
    try:
        caller = authenticate(request, gateway)
        await run.admit(caller)
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        validate(ResponsesRequest, body)
        storage = storage_of(request)
        turn = await _Turn.begin(gateway, storage, caller, body)
        if turn.dropped:  # said as chat's own drops are (x-turnout-dropped)
            run.record.extra_headers[DROPPED] = header_list(turn.dropped)
        forward = await run.prepare(
            ChatCompletionRequest,
            turn.chat,
            request.headers,
            native=turn.native,
            chat_refusal=turn.chat_refusal(),
        )
        turn.check_routable(gateway, run)
        if body.get("stream") is True:
            response = await stream_answer(
                request, gateway, run.record, Endpoint.CHAT, forward, run, turn.framer()
            )
            run.streaming = True
            return response
        content, headers = await run.answer(
            forward, turn.cache_options(), lambda work: unless_disconnected(request, work)
        )
        answer = await turn.whole(orjson.loads(content))
    except StorageUnavailable:
        failure = await run.fail(unavailable())
        return _envelope(failure.status, failure.body, failure.headers)
    except (ApiError, UpstreamError) as exc:
        failure = await run.fail(exc)
        return _envelope(failure.status, failure.body, failure.headers)
    except Exception as exc:  # a bug: router.errors answers the envelope
        run.crashed(exc)
        raise
    finally:
        await run.end()
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)


@get("/v1/responses/{response_id:str}")
async def retrieve_response(request: AnyRequest, response_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        if request.query_params.get("stream") in ("true", "1"):
            raise ApiError(
                "Streaming a stored response is only for background responses, which this "
                "server does not run.",
                param="stream",
            )
        return (await _owned(storage, caller, response_id)).response

    return await answer_json(request, "responses.retrieve", answer)


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(request: AnyRequest, response_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        record = await _owned(storage, caller, response_id)
        await storage.meta.delete_response(record.id)
        return {"id": record.id, "object": "response", "deleted": True}

    return await answer_json(request, "responses.delete", answer)


@get("/v1/responses/{response_id:str}/input_items")
async def list_input_items(
    request: AnyRequest,
    response_id: FromPath[str],
    limit: FromQuery[int] = 20,
    order: FromQuery[Literal["asc", "desc"]] = "desc",
    after: FromQuery[str | None] = None,
) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise ApiError("`limit` must be between 1 and 100.", param="limit")
        items = (await _owned(storage, caller, response_id)).input_items
        ordered = items if order == "asc" else list(reversed(items))
        if after is not None:
            ids = [item.get("id") for item in ordered]
            if after not in ids:
                raise ApiError(f"No input item with id '{after}'.", param="after")
            ordered = ordered[ids.index(after) + 1 :]
        page = ordered[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(ordered) > limit,
        }

    return await answer_json(request, "responses.input_items", answer)


@post("/v1/responses/{response_id:str}/cancel", status_code=200)
async def cancel_response(request: AnyRequest, response_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        await _owned(storage, caller, response_id)
        raise ApiError(
            "Only responses created with background=true can be cancelled, and this server "
            "does not run background responses.",
            param="response_id",
        )

    return await answer_json(request, "responses.cancel", answer)


ROUTES = [create_response, retrieve_response, delete_response, list_input_items, cancel_response]


class _Turn:
    """One request's turn: its chat request, and how its answer is mapped and kept."""

    def __init__(
        self,
        request: dict[str, Any],
        chat: dict[str, Any],
        items: list[dict[str, Any]],
        keep: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
    ) -> None:
        self.request = request
        self.chat = chat
        self.items = items
        self.keep = keep
        self.previous: str | None = request.get("previous_response_id")
        self.dropped: list[str] = []  # Responses fields chat could not take (drop mode)
        # For deployments declaring `responses` (policies/native.py): the request as sent.
        self.native: dict[str, Any] = {}
        # Why `chat` falls short of the request (it had to drop what chat has no form for):
        # only a native deployment may answer it.
        self.refusal: ApiError | None = None
        self.id = new_id("resp")
        self.created_at = int(time.time())
        # The turn's own fields of a Response, whoever answered (`own_response`).
        self.own = {
            "id": self.id,
            "created_at": self.created_at,
            "previous_response_id": self.previous,
            "store": request.get("store") is not False,
        }

    @classmethod
    async def begin(
        cls, gateway: Gateway, storage: Storage, caller: Caller, body: dict[str, Any]
    ) -> _Turn:
        if body.get("background") is True:
            raise ApiError("Background responses are not supported.", param="background")
        settings = gateway.config.responses
        owner = owner_of(caller)
        history = await earlier_items(storage, owner, body.get("previous_response_id"), settings)
        drop, refusal = _drops(gateway, caller, body), None
        try:
            chat, dropped = chat_request(body, history, drop=drop)
        except ApiError as exc:
            if drop:
                raise
            # What chat has no form for (a built-in tool ...) a native deployment takes: the
            # chat form drops it, and every deployment without `responses` refuses it.
            (chat, _), dropped, refusal = chat_request(body, history, drop=True), [], exc
        chat.update({k: body[k] for k in ROUTING_FIELDS if k in body})
        items = input_items(body)

        async def keep(response: Mapping[str, Any]) -> None:
            await store_turn(storage, owner, response, items, settings)

        turn = cls(body, chat, items, keep if body.get("store", True) is not False else None)
        turn.dropped, turn.refusal = dropped, refusal
        turn.native = native_request(body, history, items)
        return turn

    def chat_refusal(self) -> Refusal | None:
        """What a deployment without `responses` is skipped with (None: it takes `chat`)."""
        if self.refusal is None:
            return None
        return Refusal(self.refusal.param or "input", self.refusal.message)

    def check_routable(self, gateway: Gateway, run: PipelineRun) -> None:
        """Raises the chat form's refusal when no deployment of the plan is native: the
        request is then refused as any chat-only model refuses it (before any call)."""
        route = run.record.route
        if self.refusal is not None and (
            route is None or not gateway.dispatcher.answers_natively(route.plan)
        ):
            raise self.refusal

    def cache_options(self) -> Any:
        """A continued conversation is not answered from the cache (its turns are its own);
        nor is a request whose chat form falls short of it (the key is the chat form)."""
        if self.previous is not None or self.refusal is not None:
            return {"no_cache": True}
        return self.request.get("cache")

    async def whole(self, upstream: JSONObject) -> dict[str, Any]:
        """The Response: a native deployment's own (made the turn's), or the chat answer's."""
        if upstream.get("object") == "response":
            answer = own_response(upstream, self.own)
        else:
            answer = response_object(
                self.id,
                self.request,
                upstream,
                created_at=self.created_at,
                previous_response_id=self.previous,
                completed_at=int(time.time()),
            )
        if self.keep is not None:
            await self.keep(answer)
        return answer

    def framer(self) -> Framer:
        chat = ResponseEvents(
            self.id, self.request, created_at=self.created_at, previous_response_id=self.previous
        )
        native = NativeEvents(chat.response, self.own)
        return lambda chunks, on_end, _usage: _frames((chat, native), chunks, on_end, self.keep)


async def _frames(
    modes: tuple[ResponseEvents, NativeEvents],
    chunks: AsyncIterator[JSONObject],
    on_end: StreamEnd,
    keep: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    """The stream as Responses events: a chat stream mapped (`ResponseEvents`), a native
    deployment's relayed (`NativeEvents`), as its first chunk says; a failure after the
    first event is `response.failed`, never a truncated `response.completed`. The turn is
    kept before its final event goes out."""
    outcome, usage, streamed = "client_closed", None, 0
    events: ResponseEvents | NativeEvents = modes[0]
    started = False
    try:
        async for chunk in chunks:
            if not started:
                events = modes[1] if is_response_event(chunk) else modes[0]
                started = True
                for event in events.start():
                    yield sse(event)
            usage = chunk_usage(chunk) or usage
            streamed += chunk_chars(chunk)
            for event in events.on_chunk(chunk):
                yield sse(event)
        if not started:
            for event in events.start():
                yield sse(event)
        final = events.finish(completed_at=int(time.time()))
        if keep is not None:
            await keep(events.response)
        for event in final:
            yield sse(event)
        outcome = "error" if events.response.get("status") == "failed" else "ok"
    except UpstreamError as exc:
        outcome = "error"
        for event in _failed(events, started, stream_error_payload(exc)["error"]):
            yield sse(event)
    except Exception as exc:  # a bug mid-stream: the client still gets `response.failed`
        outcome = "error"
        log.error("responses_stream_failed", exc_info=exc)
        error = envelope("The server had an error processing the response.", "server_error")
        for event in _failed(events, started, error["error"]):
            yield sse(event)
    finally:
        on_end(outcome, usage, streamed)


def _failed(
    events: ResponseEvents | NativeEvents, started: bool, error: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`response.failed`, after the opening events if none went out yet."""
    return [*([] if started else events.start()), *events.fail(error)]


def _drops(gateway: Gateway, caller: Caller, body: Mapping[str, Any]) -> bool:
    """Whether what chat cannot express is dropped (translation mode `drop`: the
    request's, else the team's, else the model's) rather than refused."""
    options = body.get("router")
    asked = options.get("translation") if isinstance(options, Mapping) else None
    route = gateway.config.models.get(str(body.get("model")))
    mode = asked or caller.translation or (route.translation if route is not None else None)
    return str(mode) == "drop"


async def _owned(storage: Storage, caller: Caller, response_id: str) -> ResponseRecord:
    record = await storage.meta.get_response(response_id, time.time())
    if record is None or record.owner != owner_of(caller):
        raise not_found("response", response_id, "response_id")
    return record


def _envelope(status: int, body: bytes, headers: dict[str, str]) -> Response[Any]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)
