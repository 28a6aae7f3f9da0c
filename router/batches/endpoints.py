"""OpenAI's Batch API: `POST /v1/batches`, `GET /v1/batches/{id}`,
`POST /v1/batches/{id}/cancel` and `GET /v1/batches`.

Creating a batch only records it (`validating`); the runners (router/batches/runner.py)
check its input, run its lines through Turnout's own pipeline and write its output. While
a batch runs, its `request_counts` are read from the line state, so they move as lines
finish.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery

from policies.errors import ApiError
from policies.storage.base import ACTIVE, BatchRecord
from policies.storage.factory import Storage
from policies.teams import Caller
from router.batches.input_file import BATCH_ENDPOINTS
from router.body import read_json_object
from router.files.endpoints import owned_file
from router.stored import answer_json, new_id, not_found, owner_of

AnyRequest = Request[Any, Any, Any]
WINDOW_S = {"24h": 24 * 3600}
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512


@post("/v1/batches", status_code=200)
async def create_batch(request: AnyRequest) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        limit = request.app.state.gateway.config.server.max_body_bytes
        body = await read_json_object(request, limit)
        endpoint, window, metadata = _checked(body)
        source = await owned_file(storage, caller, str(body["input_file_id"]), "input_file_id")
        if source.purpose != "batch":
            raise ApiError(
                f"File {source.id} has purpose {source.purpose!r}; a batch needs one of "
                "purpose 'batch'.",
                param="input_file_id",
            )
        config = request.app.state.gateway.config
        await _room_for_one_more(storage, owner_of(caller), config.batches.max_active_per_owner)
        now = int(time.time())
        record = BatchRecord(
            id=new_id("batch_"),
            owner=owner_of(caller),
            key_id=caller.key_id,
            endpoint=endpoint,
            input_file_id=source.id,
            completion_window=window,
            created_at=now,
            expires_at=now + WINDOW_S[window],
            metadata=metadata,
            chunk_lines=config.batches.chunk_lines,
            output_expires_after=_output_expiry(body.get("output_expires_after")),
        )
        await storage.meta.put_batch(record)
        request.app.state.metrics.batch_status("validating")
        _wake_runner(request)
        return record.public()

    return await answer_json(request, "batches.create", answer)


@get("/v1/batches/{batch_id:str}")
async def retrieve_batch(request: AnyRequest, batch_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        return await _public(storage, await owned_batch(storage, caller, batch_id))

    return await answer_json(request, "batches.retrieve", answer)


@post("/v1/batches/{batch_id:str}/cancel", status_code=200)
async def cancel_batch(request: AnyRequest, batch_id: FromPath[str]) -> Response[Any]:
    """New lines stop at once (here, and on other replicas at their next look); lines in
    flight are cancelled; what finished is kept in the output file."""

    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        for _ in range(5):  # a runner may move the batch on between the read and the write
            record = await owned_batch(storage, caller, batch_id)
            if record.status not in ("validating", "in_progress"):
                if record.status in ("cancelling", "cancelled"):
                    return await _public(storage, record)
                raise ApiError(
                    f"Cannot cancel a batch with status {record.status!r}.",
                    status=409,
                    param="batch_id",
                )
            cancelling = record.model_copy(
                update={"status": "cancelling", "cancelling_at": int(time.time())}
            )
            if await storage.meta.update_batch(cancelling, [record.status]):
                request.app.state.metrics.batch_status("cancelling")
                runner = request.app.state.get("batch_runner")
                if runner is not None:
                    runner.cancelled(batch_id)
                return await _public(storage, cancelling)
        raise ApiError("The batch is changing; try again.", status=409, param="batch_id")

    return await answer_json(request, "batches.cancel", answer)


@get("/v1/batches")
async def list_batches(
    request: AnyRequest, after: FromQuery[str | None] = None, limit: FromQuery[int] = 20
) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise ApiError("`limit` must be between 1 and 100.", param="limit")
        records = await storage.meta.list_batches(owner_of(caller), after=after, limit=limit + 1)
        page = [await _public(storage, r) for r in records[:limit]]
        # OpenAI's spec types the ids as strings, never null: an empty page has none.
        ends = {"first_id": page[0]["id"], "last_id": page[-1]["id"]} if page else {}
        return {"object": "list", "data": page, **ends, "has_more": len(records) > limit}

    return await answer_json(request, "batches.list", answer)


ROUTES = [create_batch, retrieve_batch, cancel_batch, list_batches]


async def owned_batch(storage: Storage, caller: Caller, batch_id: str) -> BatchRecord:
    record = await storage.meta.get_batch(batch_id)
    if record is None or record.owner != owner_of(caller):
        raise not_found("batch", batch_id, "batch_id")
    return record


async def _public(storage: Storage, record: BatchRecord) -> dict[str, Any]:
    """The Batch object, with live counts while it runs."""
    if record.status in ACTIVE and record.total:
        completed, failed = await storage.meta.line_counts(record.id)
        record = record.model_copy(update={"completed": completed, "failed": failed})
    return record.public()


def _checked(body: dict[str, Any]) -> tuple[str, str, dict[str, str] | None]:
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise ApiError("`input_file_id` is required.", param="input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise ApiError(f"`endpoint` must be one of {', '.join(BATCH_ENDPOINTS)}.", param="endpoint")
    window = body.get("completion_window")
    if window not in WINDOW_S:
        raise ApiError("`completion_window` must be 24h.", param="completion_window")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > METADATA_PAIRS:
            raise ApiError(
                f"`metadata` must be an object of at most {METADATA_PAIRS} pairs.",
                param="metadata",
            )
        for key, value in metadata.items():
            if len(key) > METADATA_KEY or not isinstance(value, str) or len(value) > 512:
                raise ApiError(
                    f"`metadata` keys are at most {METADATA_KEY} characters and values "
                    f"strings of at most {METADATA_VALUE}.",
                    param=f"metadata.{key[:METADATA_KEY]}",
                )
    known = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
    unknown = set(body) - known
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(f"Unrecognized request argument supplied: {name}", param=name)
    return endpoint, window, metadata


async def _room_for_one_more(storage: Storage, owner: str, most: int) -> None:
    """Bound the work one owner queues: at most `batches.max_active_per_owner` batches not
    yet ended (lines of all of them also share the owner's limits)."""
    running = 0
    for batch_id in await storage.meta.active_batches():
        batch = await storage.meta.get_batch(batch_id)
        running += batch is not None and batch.owner == owner
    if running >= most:
        raise ApiError(
            f"You have {running} batches that have not ended, the most this server runs for "
            "you at once; wait for one to end or cancel one.",
            status=429,
            type="invalid_request_error",
            code="too_many_batches",
        )


def _output_expiry(value: Any) -> int | None:
    """`output_expires_after: {anchor: created_at, seconds}`: when the output and error
    files expire, counted from their creation."""
    if value is None:
        return None
    param = "output_expires_after"
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise ApiError("`output_expires_after.anchor` must be created_at.", param=f"{param}.anchor")
    seconds = value.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 3600 <= seconds <= 2592000:
        raise ApiError(
            "`output_expires_after.seconds` must be between 3600 and 2592000.",
            param=f"{param}.seconds",
        )
    return seconds


def _wake_runner(request: AnyRequest) -> None:
    runner = request.app.state.get("batch_runner")
    if runner is not None:
        runner.wake()
