"""`POST /v1/router/explain` (admin keys only) and the same explanation for the CLI's
`turnout explain`: the plan Turnout would carry out for a request, without carrying it
out (see policies/explain.py).

The body is `{"endpoint": "chat" | "completions" | "embeddings" | "responses", "request":
{...}}`, optionally with `"team"` or `"key"` to explain as that team or key would be routed,
and `"headers"` for rules that match on headers. Without `endpoint`, it is inferred from the
request (`messages` → chat, `input` → embeddings, else completions). A Responses request is
explained as the chat request its door runs (router/responses/to_chat.py; a
`previous_response_id` is not expanded: explain reads no stored conversation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from litestar import Request, Response, post

from policies.errors import ApiError
from policies.explain import explain
from policies.teams import Caller
from providers.types import Endpoint
from router.auth import require_admin
from router.body import read_json_object, validate
from router.errors import from_api_error
from router.gateway import Gateway
from router.responses.schema import ResponsesRequest
from router.responses.to_chat import chat_request
from router.routing_options import ROUTING_FIELDS, routing_choices
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest

SCHEMAS: dict[Endpoint, type[OpenAIRequest]] = {
    Endpoint.COMPLETIONS: CompletionRequest,
    Endpoint.CHAT: ChatCompletionRequest,
    Endpoint.EMBEDDINGS: EmbeddingRequest,
}
ALIASES = {
    "chat": Endpoint.CHAT,
    "chat.completions": Endpoint.CHAT,
    "/v1/chat/completions": Endpoint.CHAT,
    "completions": Endpoint.COMPLETIONS,
    "/v1/completions": Endpoint.COMPLETIONS,
    "embeddings": Endpoint.EMBEDDINGS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
}
RESPONSES = ("responses", "/v1/responses")


async def explain_request(
    gateway: Gateway, caller: Caller, query: Mapping[str, Any]
) -> dict[str, Any]:
    """The explanation for `query` (the endpoint's body), asked by `caller`."""
    request = query.get("request")
    if not isinstance(request, dict):
        raise ApiError("`request` must be the request body to explain.", param="request")
    refusal: ApiError | None = None
    if query.get("endpoint") in RESPONSES:
        validate(ResponsesRequest, request)
        try:
            chat, _ = chat_request(request)
        except ApiError as exc:  # only a native deployment may take it (as the door does)
            (chat, _), refusal = chat_request(request, drop=True), exc
        request = {**chat, **{k: request[k] for k in ROUTING_FIELDS if k in request}}
        query = {**query, "endpoint": "chat"}
    endpoint = _endpoint(query.get("endpoint"), request)
    as_caller = _as_caller(gateway, caller, query)
    parsed = validate(SCHEMAS[endpoint], request)
    headers = {str(k).lower(): str(v) for k, v in (query.get("headers") or {}).items()}
    route = gateway.router.route(as_caller, request, headers, routing_choices(parsed))
    if refusal is not None and not gateway.dispatcher.answers_natively(route.plan):
        raise refusal
    return await explain(
        caller=as_caller,
        asker=caller,
        route=route,
        endpoint=endpoint,
        body=request,
        dispatcher=gateway.dispatcher,
        health=gateway.health,
        limiter=gateway.limiter,
    )


@post("/v1/router/explain", status_code=200)
async def explain_endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    try:
        caller = require_admin(request, gateway)
        query = await read_json_object(request, gateway.config.server.max_body_bytes)
        answer = await explain_request(gateway, caller, query)
    except ApiError as exc:
        return from_api_error(exc)
    return Response(orjson.dumps(answer), media_type="application/json")


def _endpoint(name: Any, request: Mapping[str, Any]) -> Endpoint:
    if name is None:
        if "messages" in request:
            return Endpoint.CHAT
        return Endpoint.EMBEDDINGS if "input" in request else Endpoint.COMPLETIONS
    if isinstance(name, str) and name in ALIASES:
        return ALIASES[name]
    names = ", ".join(sorted([*ALIASES, *RESPONSES]))
    raise ApiError(f"`endpoint` must be one of {names}.", param="endpoint")


def _as_caller(gateway: Gateway, caller: Caller, query: Mapping[str, Any]) -> Caller:
    key = query.get("key")
    if key is not None:
        found = gateway.keys.lookup(str(key)) if isinstance(key, str) else None
        if found is None:
            raise ApiError("`key` is not a configured key.", param="key")
        return found
    team = query.get("team")
    if team is not None:
        settings = gateway.config.teams.get(team) if isinstance(team, str) else None
        if settings is None:
            raise ApiError(f"`team` {team!r} is not configured.", param="team")
        return Caller(f"team:{team}", None, team, False, settings, settings.key_limits)
    return caller


ROUTES = [explain_endpoint]
