"""`S3Blobs`: files' bytes in an S3-compatible bucket, which every replica shares.

Through `obstore` (Rust's `object_store`), which streams both ways: an upload is a
multipart upload fed from the incoming chunks, in parts of `PART_BYTES`, at most
`PART_CONCURRENCY` in flight, so an upload holds about that many parts in memory whatever
its size; a download is read as it is sent. S3 makes an object visible only when its
upload completes, and obstore aborts the multipart upload when the chunks' iterator
raises, so an upload cut short (`TooLarge`, a client gone) leaves no object behind, and
a key written again is replaced whole.

obstore's errors stop here: "not found" is `FileNotFoundError` on a read, and anything the
service or the network does wrong is `StorageUnavailable`, whose message names the
operation and the error's kind only (never obstore's text, which quotes the endpoint).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from policies.storage.base import StorageUnavailable, TooLarge
from policies.storage.blob_keys import checked_key, checked_range
from policies.storage.settings import S3Settings

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ClientConfig, RetryConfig, S3Config

PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (but the last)
PART_CONCURRENCY = 2
READ_CHUNK = 256 * 1024
# obstore's defaults retry for up to three minutes; a request in flight should learn of an
# outage sooner. The overall timeout is long because a download lasts as long as its
# client takes to read it; a stalled connection is caught by the read timeout instead.
_CLIENT: ClientConfig = {"connect_timeout": "5s", "read_timeout": "30s", "timeout": "1h"}
_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=15),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=2),
        "base": 2,
    },
}


@contextmanager
def _reachable(operation: str, *, missing_is_outage: bool = True) -> Iterator[None]:
    """The one place obstore's errors become Turnout's. A write that finds nothing (the
    bucket is gone) is an outage; a read that finds nothing is a missing key."""
    try:
        yield
    except FileNotFoundError as exc:
        if not missing_is_outage:
            raise
        raise StorageUnavailable(f"s3 {operation}: bucket not found") from exc
    except BaseError as exc:
        raise StorageUnavailable(f"s3 {operation} failed: {type(exc).__name__}") from exc


class S3Blobs:
    """The `BlobStore` that keeps each blob as the object `<prefix><key>` of a bucket."""

    def __init__(self, store: S3Store) -> None:
        self._store = store

    @classmethod
    def from_settings(cls, settings: S3Settings) -> S3Blobs:
        config: S3Config = {"region": settings.region}
        if settings.endpoint is not None:
            config["endpoint"] = settings.endpoint
        if settings.key_id is not None:
            config["access_key_id"] = settings.key_id
        if settings.secret is not None:
            config["secret_access_key"] = settings.secret
        store = S3Store(
            settings.bucket,
            prefix=settings.prefix or None,
            config=config,
            client_options={**_CLIENT, "allow_http": settings.allow_http},
            retry_config=_RETRY,
        )
        return cls(store)

    async def put(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        counted = _Counted(chunks, max_bytes)
        upload = asyncio.ensure_future(self._upload(checked_key(key), counted))
        try:
            await asyncio.shield(upload)
        except asyncio.CancelledError:
            # A cancelled put would drop obstore's upload without aborting it, leaving a
            # hidden multipart upload in the bucket; failing its chunks instead makes
            # obstore abort it.
            counted.abandon()
            upload.add_done_callback(_retrieve_error)  # the caller gets the cancellation
            await asyncio.wait([upload], timeout=_RETRY["retry_timeout"].total_seconds())
            raise
        return counted.total

    async def _upload(self, path: str, counted: _Counted) -> None:
        with _reachable("put"):
            await obstore.put_async(
                self._store,
                path,
                counted,
                use_multipart=True,
                chunk_size=PART_BYTES,
                max_concurrency=PART_CONCURRENCY,
            )

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        checked_range(start, end)
        path = checked_key(key)
        if end is not None and end <= start:
            await self._size(path)  # nothing to read, but a missing key must still say so
            return
        with _reachable("get", missing_is_outage=False):
            try:
                result = await obstore.get_async(self._store, path, options=_range(start, end))
            except BaseError:
                # S3 refuses (416) a range that starts at or past the end (any range of an
                # empty object); a file read past its end is empty, as on local disk.
                if start >= await self._size(path):
                    return
                raise
            async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield chunk

    async def _size(self, path: str) -> int:
        with _reachable("head", missing_is_outage=False):
            meta = await obstore.head_async(self._store, path)
        return meta["size"]

    async def delete(self, key: str) -> None:
        with _reachable("delete"):
            await obstore.delete_async(self._store, checked_key(key))

    async def ping(self) -> None:
        """Write and remove a probe object: reading alone would pass with credentials that
        cannot write. Each probe has its own name, so replicas starting together do not
        remove each other's."""
        probe = f"ping-{uuid.uuid4().hex}"
        with _reachable("ping"):
            await obstore.put_async(self._store, probe, b"")
            await obstore.delete_async(self._store, probe)

    async def aclose(self) -> None:
        return None  # obstore's client holds no connection open that needs closing


def _range(start: int, end: int | None) -> GetOptions | None:
    if end is not None:
        return {"range": (start, end)}
    if start > 0:
        return {"range": {"offset": start}}
    return None  # the whole object: also an empty one, which any range would refuse


def _retrieve_error(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Abandoned(Exception):
    """The upload's caller was cancelled: raised to obstore, which aborts the upload."""


class _Counted:
    """The upload's chunks, counted as obstore reads them: `TooLarge` once past
    `max_bytes`, and `_Abandoned` once `abandon` is called; either aborts the upload."""

    def __init__(self, chunks: AsyncIterator[bytes], max_bytes: int) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._abandoned = False
        self._reading: asyncio.Task[object] | None = None
        self.total = 0

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> bytes:
        if self._abandoned:
            raise _Abandoned
        self._reading = asyncio.current_task()
        try:
            chunk = await anext(self._chunks)
        except asyncio.CancelledError:
            if self._abandoned:
                raise _Abandoned from None
            raise
        finally:
            self._reading = None
        self.total += len(chunk)
        if self.total > self._max_bytes:
            raise TooLarge(f"more than {self._max_bytes} bytes")
        return chunk

    def abandon(self) -> None:
        """Fail the next chunk, or the one being waited for (a client that will never
        send it must not keep the upload open)."""
        self._abandoned = True
        if self._reading is not None:
            self._reading.cancel()
