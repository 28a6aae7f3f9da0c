"""Reading a request body: bounded in size, parsed as JSON, validated into a schema."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from litestar import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from policies.errors import ApiError
from router.schemas.common import ParamError

M = TypeVar("M", bound=BaseModel)

# Discriminator values pydantic writes into an error's location; they are not params.
_TAGS = frozenset(
    {
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "function",
        "text",
        "image_url",
        "input_audio",
        "file",
        "refusal",
        "json_object",
        "json_schema",
    }
)


async def read_json_object(request: Request[Any, Any, Any], limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 as soon as it passes `limit` bytes (never buffered
    past it), 400 when it is not a JSON object."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    try:
        body = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            f"but what was sent was not valid JSON: {exc})",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    return body


def validate(schema: type[M], body: dict[str, Any]) -> M:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise _first_problem(exc) from None


def _first_problem(exc: ValidationError) -> ApiError:
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    location = _param(error)
    if isinstance(cause, ParamError):
        param = f"{location}.{cause.param}" if location else cause.param
        return ApiError(cause.message, param=param, code="invalid_value")
    if error["type"] == "missing":
        return ApiError(
            f"Missing required parameter: '{location}'.",
            param=location,
            code="missing_required_parameter",
        )
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ApiError(
        f"Invalid value for '{location}': {error['msg']} (got {shown}).",
        param=location,
        code="invalid_type" if error["type"].endswith("_type") else "invalid_value",
    )


def _param(error: ErrorDetails) -> str:
    path = ""
    previous: object = None
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part in {"str", "int", "float", "bool"}:
            pass  # a union member's name, not a field
        elif isinstance(previous, int) and part in _TAGS:
            pass  # a discriminated union's tag
        else:
            path = f"{path}.{part}" if path else part
        previous = part
    if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        discriminator = (error.get("ctx") or {}).get("discriminator", "type")
        path = f"{path}.{str(discriminator).strip(chr(39))}"
    return path


def _too_large(limit: int) -> ApiError:
    return ApiError(
        f"Request body too large: the limit is {limit} bytes.",
        status=413,
        code="request_too_large",
    )
