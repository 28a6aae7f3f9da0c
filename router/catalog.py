"""`GET /v1/models`, `GET /v1/models/{id}` and the health probes."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from policies.errors import model_not_found
from router.auth import authenticate
from router.gateway import Gateway

AnyRequest = Request[Any, Any, Any]


def _model_object(gateway: Gateway, name: str) -> dict[str, Any]:
    route = gateway.config.models[name]
    return {"id": name, "object": "model", "created": gateway.created, "owned_by": route.owned_by}


@get("/v1/models")
async def list_models(request: AnyRequest) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    authenticate(request, gateway)
    data = [_model_object(gateway, name) for name in gateway.config.models]
    return {"object": "list", "data": data}


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: AnyRequest, model_id: str) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    authenticate(request, gateway)
    name = model_id.lstrip("/")
    if name not in gateway.config.models:
        raise model_not_found(name)
    return _model_object(gateway, name)


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready")
async def ready(request: AnyRequest) -> Response[dict[str, Any]]:
    gateway: Gateway = request.app.state.gateway
    status = 200 if gateway.ready else 503
    body = {"status": "ready" if gateway.ready else "starting", "providers": len(gateway.providers)}
    return Response(body, status_code=status)


ROUTES = [list_models, retrieve_model, live, ready]
