"""Reading a request body: bounded in size, parsed as JSON, validated into a schema."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import orjson
from litestar.types import HTTPReceiveMessage
from pydantic import BaseModel, ValidationError

from policies.error_paths import locate
from policies.errors import ApiError
from router.incoming import HTTPRequest
from router.schemas.common import ParamError

M = TypeVar("M", bound=BaseModel)


async def read_json_object(request: HTTPRequest, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 as soon as it passes `limit` bytes (never buffered
    past it), 400 when it is not a JSON object (or one nested too deeply to be sent on), 499
    when the client goes away first (a body slower than `server.body_timeout`: 408, raised
    by router.connection_guard)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        # The ASGI messages themselves rather than `request.stream()`, which reports a
        # client that went away as a 500: here that is a 499, the client's doing.
        message = cast("HTTPReceiveMessage", await request.receive())
        if message["type"] == "http.disconnect":
            raise client_closed()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
        more = message.get("more_body", False)
    raw = b"".join(parts)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            f"but what was sent was not valid JSON: {exc})",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    # Nesting needs an opening bracket per level: a body with fewer than MAX_DEPTH of them
    # (almost every one) is not probed, and the hot path pays two byte counts, not a write.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _nested_too_deeply(body):
        raise ApiError(
            f"The request body is nested too deeply (at most {MAX_DEPTH} levels).",
            code="invalid_json",
        )
    return body


# orjson reads JSON nested 1024 levels deep but writes only 254: a body Turnout could not
# write again (upstream, into a cache key, into a translated body a few levels deeper than
# the client's) would fail after its reservation as a 500. Bodies are refused deeper than
# this, which leaves the translations and keys their few levels.
MAX_DEPTH = 224
_HEADROOM = 254 - MAX_DEPTH


def _nested_too_deeply(body: dict[str, Any]) -> bool:
    """Whether `body` is nested deeper than `MAX_DEPTH`: written once by orjson under as
    many levels as the headroom (cheaper than any walk of it in Python)."""
    probe: Any = body
    for _ in range(_HEADROOM):
        probe = [probe]
    try:
        orjson.dumps(probe)
    except orjson.JSONEncodeError:
        return True
    return False


def validate(schema: type[M], body: dict[str, Any]) -> M:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise _most_specific_problem(exc, body) from None


def _most_specific_problem(exc: ValidationError, body: dict[str, Any]) -> ApiError:
    """One error for the client. A value that fits no member of a union yields an error per
    member; the one that reached deepest into what the client sent is the one that
    explains it (a 5-item `stop` list is too long, not "not a string")."""
    located = [(locate(error, body), error) for error in exc.errors(include_url=False)]
    (path, _), error = max(
        located, key=lambda item: (item[0][1], not item[1]["type"].endswith("_type"))
    )
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):
        param = f"{path}.{cause.param}" if path else cause.param
        return ApiError(cause.message, param=param, code="invalid_value")
    if error["type"] == "missing":
        return ApiError(
            f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter"
        )
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ApiError(
        f"Invalid value for '{path}': {error['msg']} (got {shown}).",
        param=path,
        code="invalid_type" if error["type"].endswith("_type") else "invalid_value",
    )


def client_closed() -> ApiError:
    """A client that went away before its answer: logged as 499, never as a failure."""
    return ApiError("The client closed the connection.", status=499, code="client_closed")


def _too_large(limit: int) -> ApiError:
    return ApiError(
        f"Request body too large: the limit is {limit} bytes.",
        status=413,
        code="request_too_large",
    )
