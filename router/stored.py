"""What the files and batches doors share: the storage, whose records a caller may see,
and the answers for a record that is not there or a store that is down."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from litestar import Request, Response

from policies.errors import ApiError
from policies.storage.base import StorageUnavailable
from policies.storage.factory import Storage
from policies.teams import Caller
from router.accounting import RequestRecord
from router.auth import authenticate
from router.errors import from_api_error
from router.gateway import Gateway

AnyRequest = Request[Any, Any, Any]


def storage_of(request: Request[Any, Any, Any]) -> Storage:
    storage: Storage | None = request.app.state.get("storage")
    if storage is None:  # the lifespan opens it before the server accepts requests
        raise unavailable()
    return storage


def owner_of(caller: Caller) -> str:
    """Whose records a caller sees: its team's, else its own key's (open access: one
    anonymous owner)."""
    if caller.team is not None:
        return f"team:{caller.team}"
    if caller.key_id == "anonymous":
        return "anonymous"
    return f"key:{caller.key_id}"


def not_found(kind: str, record_id: str, param: str = "id") -> ApiError:
    """OpenAI's words for a missing record; another owner's record is missing too."""
    return ApiError(f"No such {kind}: {record_id}", status=404, param=param)


def unavailable() -> ApiError:
    return ApiError(
        "File storage is unavailable; try again shortly.",
        status=503,
        type="server_error",
        code="storage_unavailable",
        headers={"retry-after": "1"},
    )


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


Handler = Callable[[Storage, Caller], Awaitable[dict[str, Any]]]


async def answer_json(request: AnyRequest, endpoint: str, build: Handler) -> Response[Any]:
    """Authenticate, run `build`, answer its JSON; errors in OpenAI's envelope."""
    gateway: Gateway = request.app.state.gateway
    record = RequestRecord.begin(
        endpoint, request.headers.get("x-request-id"), gateway.new_request_id
    )
    try:
        caller = record.caller = authenticate(request, gateway)
        body = await build(storage_of(request), caller)
    except StorageUnavailable:
        return failed(record, unavailable())
    except ApiError as exc:
        return failed(record, exc)
    record.emit(200)
    return Response(orjson.dumps(body), media_type="application/json", headers=record.headers())


def failed(record: RequestRecord, exc: ApiError) -> Response[Any]:
    record.emit(exc.status, outcome="rejected", error=exc.code or exc.type)
    response = from_api_error(exc)
    response.headers.update(record.headers())
    return response
