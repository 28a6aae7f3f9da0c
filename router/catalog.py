"""`GET /v1/models`, `GET /v1/models/{id}` and the health probes.

The models answer in OpenAI's shape, or in Anthropic's where the request carries an
`anthropic-version` header (router/anthropic_models.py). `{id}` resolves as a request's
`model` does (an alias, a name a `match:` pattern takes: policies/model_names.py); the
answer names the id asked for, as the SDK that asked expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from litestar import Request, Response, get
from litestar.params import FromPath

from policies.errors import ApiError, model_not_found
from policies.teams import Caller
from router.accounting import RequestRecord
from router.anthropic_models import error_response, model_info, models_page, wants_anthropic
from router.auth import authenticate, authenticate_api_key
from router.errors import from_api_error
from router.gateway import Gateway

AnyRequest = Request[Any, Any, Any]


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[Any]:
    anthropic = wants_anthropic(request.headers)

    def answer(gateway: Gateway, caller: Caller) -> dict[str, Any]:
        names = [name for name in gateway.config.models if caller.may_use(name)]
        if anthropic:
            models = [_anthropic_object(gateway, name, name) for name in names]
            return models_page(models, request.query_params)
        return {"object": "list", "data": [_model_object(gateway, name, name) for name in names]}

    return _answer(request, "models", answer, anthropic)


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: AnyRequest, model_id: FromPath[str]) -> Response[Any]:
    name = model_id.lstrip("/")
    anthropic = wants_anthropic(request.headers)

    def answer(gateway: Gateway, caller: Caller) -> dict[str, Any]:
        resolved = gateway.config.model_names.resolve(name)
        if resolved is None or not caller.may_use(resolved.configured):
            raise model_not_found(name)
        if anthropic:
            return _anthropic_object(gateway, resolved.configured, name)
        return _model_object(gateway, resolved.configured, name)

    return _answer(request, "model", answer, anthropic)


def _answer(
    request: AnyRequest,
    endpoint: str,
    build: Callable[[Gateway, Caller], dict[str, Any]],
    anthropic: bool = False,
) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    record = RequestRecord.begin(
        endpoint, request.headers.get("x-request-id"), gateway.new_request_id
    )
    try:
        check = authenticate_api_key if anthropic else authenticate  # x-api-key too
        body = build(gateway, check(request, gateway))
    except ApiError as exc:
        record.emit(exc.status, outcome="rejected", error=exc.code or exc.type)
        response = error_response(exc) if anthropic else from_api_error(exc)
        response.headers.update(record.headers())
        return response
    record.emit(200)
    return Response(orjson.dumps(body), media_type="application/json", headers=record.headers())


def _model_object(gateway: Gateway, name: str, shown_as: str) -> dict[str, Any]:
    """Configured model `name`, under the id the client knows it by."""
    route = gateway.config.models[name]
    return {
        "id": shown_as,
        "object": "model",
        "created": gateway.created,
        "owned_by": route.owned_by,
    }


def _anthropic_object(gateway: Gateway, name: str, shown_as: str) -> dict[str, Any]:
    display = gateway.config.models[name].display_name or shown_as
    return model_info(shown_as, display, gateway.created)


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready")
async def ready(request: AnyRequest) -> Response[dict[str, Any]]:
    """Whether the gateway serves. Anyone sees the status and what failed to start, by
    name; only an admin key (or anyone, in open mode) sees why: a start-up error can
    name an internal address or a local path (the log has it too)."""
    gateway: Gateway = request.app.state.gateway
    status = 200 if gateway.ready else 503
    state = "ready" if gateway.ready else ("failed" if gateway.startup_error else "starting")
    body: dict[str, Any] = {"status": state, "providers": len(gateway.providers)}
    if gateway.startup_error:
        body["not_ready"] = gateway.not_ready
        if _is_admin(request, gateway):
            body["error"] = gateway.redactor.for_log(gateway.startup_error)
    return Response(body, status_code=status)


def _is_admin(request: AnyRequest, gateway: Gateway) -> bool:
    try:
        return authenticate(request, gateway).admin or gateway.open_access
    except ApiError:
        return False


ROUTES = [list_models, retrieve_model, live, ready]
