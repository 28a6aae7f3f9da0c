"""`GET /v1/models` and `GET /v1/models/{id}` in Anthropic's shape, for clients that say
they speak Anthropic's API (an `anthropic-version` header: the `anthropic` SDKs and
Claude Code send one on every request); router/catalog.py picks the shape.

A model is `{"type": "model", "id", "display_name", "created_at", "lifecycle"}`
(`created_at` an RFC 3339 string); the list is one page of them with `has_more`,
`first_id` and `last_id`, paged as Anthropic pages (`limit`, default 20, at most 1000;
`after_id` / `before_id` cursors), so an SDK's auto-pagination walks every model.
Errors are Anthropic's envelope `{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from litestar import Response

from policies.errors import ApiError
from providers.anthropic.errors import STATUS_TYPES

VERSION_HEADER = "anthropic-version"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def wants_anthropic(headers: Mapping[str, str]) -> bool:
    return VERSION_HEADER in headers


def model_info(model_id: str, display_name: str, created: int) -> dict[str, Any]:
    """One model as Anthropic describes it (`created`: Unix seconds). Turnout does not
    know a model's release date: it gives the time it loaded its config, as OpenAI's
    shape does in `created`."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": rfc3339(created),
        "lifecycle": "active",
    }


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def models_page(models: Sequence[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """The page of `models` (in list order) that `query` asks for; a bad `limit`, both
    cursors at once or a cursor naming no listed model is a 400."""
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise ApiError("Only one of `after_id` and `before_id` may be given.", param="before_id")
    ids = [model["id"] for model in models]
    if before is not None:
        end = _position(ids, before, "before_id")
        chosen, more = models[max(0, end - limit) : end], end > limit
    else:
        start = _position(ids, after, "after_id") + 1 if after is not None else 0
        chosen, more = models[start : start + limit], start + limit < len(models)
    return {
        "data": list(chosen),
        "has_more": more,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
    }


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(f"`limit` must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return limit


def _position(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise ApiError(f"`{param}`: no listed model has the id {cursor!r}.", param=param) from None


def error_response(exc: ApiError) -> Response[bytes]:
    """`exc` in Anthropic's envelope, its status kept (the SDK picks its exception class
    by status), its type Anthropic's name for that status."""
    body = {
        "type": "error",
        "error": {"type": STATUS_TYPES.get(exc.status, "api_error"), "message": exc.message},
    }
    return Response(
        orjson.dumps(body),
        status_code=exc.status,
        media_type="application/json",
        headers=dict(exc.headers),
    )
