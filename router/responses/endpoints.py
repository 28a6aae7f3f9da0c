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
from providers.errors import UpstreamError
from providers.types import Endpoint
from router.auth import authenticate
from router.body import read_json_object, validate
from router.endpoints import stream_answer, unless_disconnected
from router.gateway import Gateway, PolicyObserver
from router.pipeline import PipelineRun
from router.responses.schema import ResponsesRequest
from router.responses.turn import prepare_turn
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
        turn, forward = await prepare_turn(run, storage_of(request), caller, body, request.headers)
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
            # Strings even on an empty page: the spec's ResponseItemList requires them.
            "first_id": page[0].get("id", "") if page else "",
            "last_id": page[-1].get("id", "") if page else "",
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


async def _owned(storage: Storage, caller: Caller, response_id: str) -> ResponseRecord:
    record = await storage.meta.get_response(response_id, time.time())
    if record is None or record.owner != owner_of(caller):
        raise not_found("response", response_id, "response_id")
    return record


def _envelope(status: int, body: bytes, headers: dict[str, str]) -> Response[Any]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)
