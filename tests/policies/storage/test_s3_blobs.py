"""What only `S3Blobs` has to get right: where its objects go, that an upload cut short
leaves no multipart upload behind, and that an unusable bucket is `StorageUnavailable`
without the credentials or the endpoint in the message. On the session's moto server."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from policies.storage.base import StorageUnavailable, TooLarge
from policies.storage.s3_blobs import S3Blobs
from policies.storage.settings import S3Settings
from tests.s3_server import bucket_keys, free_port

MIB = 1024 * 1024
SECRET = "not-a-real-secret-0123456789"


def own_prefix(settings: S3Settings, **update: object) -> S3Settings:
    return settings.model_copy(update={"prefix": f"test-{uuid.uuid4().hex}/", **update})


async def chunked(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_objects_are_kept_under_the_prefix(s3_settings: S3Settings) -> None:
    settings = own_prefix(s3_settings)
    store = S3Blobs.from_settings(settings)
    await store.put("file-a", chunked(b"a"), max_bytes=10)
    await store.ping()  # its probe object is removed again
    assert [k for k in await bucket_keys(settings) if k.startswith(settings.prefix)] == [
        f"{settings.prefix}file-a"
    ]


async def test_an_upload_cut_short_leaves_no_multipart_upload(s3_settings: S3Settings) -> None:
    """Two parts are uploaded before the limit is passed: the upload is seen pending on the
    server first (so the check after it means something), then aborted."""
    settings = own_prefix(s3_settings)
    store = S3Blobs.from_settings(settings)
    key = f"{settings.prefix}file-cut"
    seen_pending = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal seen_pending
        for _ in range(11):
            yield os.urandom(MIB)
        deadline = time.monotonic() + 10
        while not seen_pending and time.monotonic() < deadline:
            seen_pending = key in await bucket_keys(settings, uploads=True)
            await asyncio.sleep(0.05)
        yield b"one byte too many"

    with pytest.raises(TooLarge):
        await store.put("file-cut", source(), max_bytes=11 * MIB)
    assert seen_pending
    assert key not in await bucket_keys(settings, uploads=True)
    assert key not in await bucket_keys(settings)


async def test_a_cancelled_upload_leaves_no_multipart_upload(s3_settings: S3Settings) -> None:
    """Cancelled while waiting for a chunk that never comes (a client gone quiet): obstore
    alone would drop the upload unaborted, hidden in the bucket."""
    settings = own_prefix(s3_settings)
    store = S3Blobs.from_settings(settings)
    key = f"{settings.prefix}file-cancelled"
    stalled = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield os.urandom(MIB)
        deadline = time.monotonic() + 10
        while key not in await bucket_keys(settings, uploads=True):
            assert time.monotonic() < deadline, "the multipart upload never began"
            await asyncio.sleep(0.05)
        stalled.set()
        await asyncio.Event().wait()
        yield b"never"

    put = asyncio.create_task(store.put("file-cancelled", source(), max_bytes=64 * MIB))
    await asyncio.wait_for(stalled.wait(), timeout=20)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert key not in await bucket_keys(settings, uploads=True)
    assert key not in await bucket_keys(settings)


def _unusable(settings: S3Settings, case: str) -> S3Settings:
    updates: dict[str, dict[str, object]] = {
        "no server": {"endpoint": f"http://127.0.0.1:{free_port()}"},
        "no bucket": {"bucket": "no-such-bucket"},
        "http refused": {"allow_http": False},  # the endpoint is plain http://
    }
    return settings.model_copy(update={**updates[case], "secret": SECRET})


@pytest.mark.parametrize("case", ["no server", "no bucket", "http refused"])
async def test_an_unusable_bucket_is_storage_unavailable(
    s3_settings: S3Settings, case: str
) -> None:
    settings = _unusable(s3_settings, case)
    store = S3Blobs.from_settings(settings)
    with pytest.raises(StorageUnavailable) as raised:
        await store.ping()
    with pytest.raises(StorageUnavailable):
        await store.put("file-a", chunked(b"a"), max_bytes=10)
    with pytest.raises(StorageUnavailable):
        await store.delete("file-a")
    for message in (str(raised.value), repr(raised.value)):
        assert SECRET not in message
        assert "127.0.0.1" not in message


async def test_a_read_from_an_unreachable_server_is_storage_unavailable(
    s3_settings: S3Settings,
) -> None:
    store = S3Blobs.from_settings(_unusable(s3_settings, "no server"))
    with pytest.raises(StorageUnavailable):
        async for _ in store.get("file-a"):
            pass
