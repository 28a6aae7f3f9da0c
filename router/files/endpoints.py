"""OpenAI's Files API: `POST /v1/files`, `GET /v1/files`, `GET /v1/files/{id}`,
`GET /v1/files/{id}/content` and `DELETE /v1/files/{id}`.

Each team (a key outside any team: that key) sees only its own files; another's file is
a 404, as a missing one. Uploads stream to the blob store (router/files/upload.py) and
are cut with a 413 past `storage.max_file_bytes`; content streams back byte-exact. A
file of purpose `batch` is checked line by line at upload (router/batches/input_file.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from policies.errors import ApiError
from policies.storage.base import FileRecord, StorageUnavailable, TooLarge
from policies.storage.factory import Storage
from policies.teams import Caller
from router.accounting import RequestRecord
from router.auth import authenticate
from router.batches.input_file import InputCheck
from router.files.upload import Upload, too_large
from router.gateway import Gateway
from router.stored import (
    answer_json,
    failed,
    new_id,
    not_found,
    owner_of,
    storage_of,
    unavailable,
)

AnyRequest = Request[Any, Any, Any]
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 24 * 3600


@post("/v1/files", status_code=200)
async def upload_file(request: AnyRequest) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        limit = storage.settings.max_file_bytes
        upload = Upload.of(request, limit)
        owner = owner_of(caller)
        room = await _room_left(storage, owner)
        file_id = new_id("file-")
        try:
            size = await storage.blobs.put(file_id, upload.file_chunks(), min(limit, room))
        except TooLarge:
            raise (too_large(limit) if room >= limit else _over_quota(storage)) from None
        try:
            record = await _checked(request, storage, upload, file_id, size, owner)
        except BaseException:
            await storage.blobs.delete(file_id)
            raise
        await storage.meta.put_file(record)
        return record.public()

    return await answer_json(request, "files.create", answer)


@get("/v1/files")
async def list_files(
    request: AnyRequest,
    purpose: FromQuery[str | None] = None,
    limit: FromQuery[int] = 10000,
    after: FromQuery[str | None] = None,
    order: FromQuery[Literal["asc", "desc"]] = "desc",
) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        if not 1 <= limit <= 10000:
            raise ApiError("`limit` must be between 1 and 10000.", param="limit")
        records = await storage.meta.list_files(
            owner_of(caller), purpose=purpose, after=after, limit=limit + 1, order=order
        )
        now = time.time()
        live = [r for r in records if r.expires_at is None or r.expires_at > now]
        page = live[:limit]
        # OpenAI's spec requires both ids, as strings (never null), even for an empty page.
        return {
            "object": "list",
            "data": [r.public() for r in page],
            "first_id": page[0].id if page else "",
            "last_id": page[-1].id if page else "",
            "has_more": len(records) > limit,
        }

    return await answer_json(request, "files.list", answer)


@get("/v1/files/{file_id:str}")
async def retrieve_file(request: AnyRequest, file_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        return (await owned_file(storage, caller, file_id)).public()

    return await answer_json(request, "files.retrieve", answer)


@delete("/v1/files/{file_id:str}", status_code=200)
async def delete_file(request: AnyRequest, file_id: FromPath[str]) -> Response[Any]:
    async def answer(storage: Storage, caller: Caller) -> dict[str, Any]:
        record = await owned_file(storage, caller, file_id)
        user = await _running_batch_of(storage, record.id)
        if user is not None:
            # Its runners read the input chunk by chunk until the batch ends: without it
            # they could neither run nor expire the rest of the batch.
            raise ApiError(
                f"File {record.id} is the input of batch {user}, which has not ended; "
                "cancel the batch or wait for it to end.",
                status=409,
                param="file_id",
            )
        await storage.meta.delete_file(record.id)
        await storage.blobs.delete(record.id)
        return {"id": record.id, "object": "file", "deleted": True}

    return await answer_json(request, "files.delete", answer)


@get("/v1/files/{file_id:str}/content")
async def file_content(request: AnyRequest, file_id: FromPath[str]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    record = RequestRecord.begin("files.content", None, gateway.new_request_id)
    try:
        storage = storage_of(request)
        caller = authenticate(request, gateway)
        found = await owned_file(storage, caller, file_id)
        chunks = storage.blobs.get(found.id)
        first = await anext(chunks, b"")  # a missing blob shows here, before the 200
    except (FileNotFoundError, StopAsyncIteration):
        return failed(record, not_found("File object", file_id))
    except StorageUnavailable:
        return failed(record, unavailable())
    except ApiError as exc:
        return failed(record, exc)
    record.emit(200)
    headers = {**record.headers(), "content-length": str(found.bytes)}
    return Stream(_prepend(first, chunks), media_type="application/octet-stream", headers=headers)


ROUTES = [upload_file, list_files, retrieve_file, delete_file, file_content]


async def owned_file(
    storage: Storage, caller: Caller, file_id: str, param: str = "id"
) -> FileRecord:
    """The caller's file `file_id`, live; else the 404 a missing file gets (naming `param`,
    the request's field that held the id)."""
    record = await storage.meta.get_file(file_id)
    expired = record is not None and record.expires_at is not None
    if (
        record is None
        or record.owner != owner_of(caller)
        or (expired and (record.expires_at or 0) <= time.time())
    ):
        raise not_found("File object", file_id, param)
    return record


async def _running_batch_of(storage: Storage, file_id: str) -> str | None:
    """The id of a batch not yet ended whose input is `file_id`, if any."""
    for batch_id in await storage.meta.active_batches():
        batch = await storage.meta.get_batch(batch_id)
        if batch is not None and batch.input_file_id == file_id:
            return batch_id
    return None


async def _checked(
    request: AnyRequest, storage: Storage, upload: Upload, file_id: str, size: int, owner: str
) -> FileRecord:
    """The record of an upload whose parts are all in, once its fields are valid (and a
    batch input's lines: read back from the store as they were written)."""
    if upload.files != 1:
        raise ApiError("Send exactly one `file` part.", param="file")
    purpose = upload.fields.get("purpose")
    if purpose not in PURPOSES:
        raise ApiError(f"`purpose` must be one of {', '.join(PURPOSES)}.", param="purpose")
    now = int(time.time())
    expires_at = _expiry(upload.fields, now)
    if purpose == "batch":
        config = request.app.state.gateway.config
        check = InputCheck(config.batches.max_lines, config.server.max_body_bytes)
        await check.check(storage.blobs.get(file_id))
        if not check.ok:
            first = check.problems[0]
            where = "the file" if first.line is None else f"line {first.line}"
            where += f", field `{first.param}`" if first.param else ""
            raise ApiError(
                f"Invalid batch input file: {where}: {first.message}",
                param="file",
                code=first.code,
            )
    filename = upload.filename or "file"
    return FileRecord(
        id=file_id,
        owner=owner,
        bytes=size,
        created_at=now,
        filename=filename,
        purpose=purpose,
        expires_at=expires_at,
    )


def _expiry(fields: dict[str, str], now: int) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise ApiError("`expires_after.anchor` must be created_at.", param="expires_after.anchor")
    if seconds is None or not seconds.isdigit():
        raise ApiError("`expires_after.seconds` must be a number.", param="expires_after.seconds")
    if not MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S:
        raise ApiError(
            f"`expires_after.seconds` must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}.",
            param="expires_after.seconds",
        )
    return now + int(seconds)


async def _room_left(storage: Storage, owner: str) -> int:
    """Bytes `owner` may still store under `storage.max_bytes_per_owner` (uploads running
    at the same moment each see the same room: the quota is checked, not reserved)."""
    quota = storage.settings.max_bytes_per_owner
    if quota is None:
        return storage.settings.max_file_bytes
    room, after = quota, None
    while True:  # a page at a time: an owner may keep many files
        page = await storage.meta.list_files(
            owner, purpose=None, after=after, limit=1000, order="asc"
        )
        room -= sum(record.bytes for record in page)
        if len(page) < 1000:
            break
        after = page[-1].id
    if room <= 0:
        raise _over_quota(storage)
    return room


def _over_quota(storage: Storage) -> ApiError:
    return ApiError(
        f"Your files would take more than the {storage.settings.max_bytes_per_owner} bytes "
        "this server keeps for you; delete some first.",
        status=413,
        param="file",
        code="storage_quota_exceeded",
        headers={"connection": "close"},
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
