"""Every `BlobStore` test runs against both stores: `LocalBlobs` on a temporary directory,
and `S3Blobs` on the session's moto server (each test under its own prefix)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from policies.storage.base import BlobStore, StorageUnavailable, TooLarge
from policies.storage.local_blobs import LocalBlobs
from policies.storage.s3_blobs import S3Blobs
from policies.storage.settings import S3Settings

MIB = 1024 * 1024
BINARY = bytes(range(256)) * 7 + b"\x00\r\n\xff"  # every byte value, and line ends


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store: BlobStore
    if request.param == "local":
        store = LocalBlobs(tmp_path)
    else:
        settings: S3Settings = request.getfixturevalue("s3_settings")
        own = settings.model_copy(update={"prefix": f"test-{uuid.uuid4().hex}/"})
        store = S3Blobs.from_settings(own)
    yield store
    await store.aclose()


async def chunked(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def read(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, start, end)])


async def test_bytes_come_back_exactly(blobs: BlobStore) -> None:
    assert await blobs.put("file-bin", chunked(pieces(BINARY, 100)), max_bytes=10 * MIB) == len(
        BINARY
    )
    assert await read(blobs, "file-bin") == BINARY


async def test_a_multi_mib_upload_of_many_small_chunks_comes_back_exactly(
    blobs: BlobStore,
) -> None:
    # 12 MiB in uneven chunks: several of S3's 5 MiB parts, and chunks straddling them.
    data = os.urandom(12 * MIB + 12345)
    written = await blobs.put("file-big", chunked(pieces(data, 37 * 1024 + 11)), 64 * MIB)
    assert written == len(data)
    digest = hashlib.sha256()
    async for chunk in blobs.get("file-big"):
        digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()


async def test_an_empty_file(blobs: BlobStore) -> None:
    assert await blobs.put("file-empty", chunked([]), max_bytes=10) == 0
    assert await read(blobs, "file-empty") == b""
    assert await read(blobs, "file-empty", 5) == b""
    assert await read(blobs, "file-empty", 0, 10) == b""


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 10), (5, None), (1000, 1800), (1790, None), (3, 3), (1790, 5000), (1796, None)],
)
async def test_ranged_reads(blobs: BlobStore, start: int, end: int | None) -> None:
    assert len(BINARY) == 1796
    await blobs.put("file-range", chunked(pieces(BINARY, 333)), max_bytes=MIB)
    assert await read(blobs, "file-range", start, end) == BINARY[start:end]


async def test_a_read_past_the_end_is_empty(blobs: BlobStore) -> None:
    await blobs.put("file-short", chunked([b"abc"]), max_bytes=MIB)
    assert await read(blobs, "file-short", 10) == b""
    assert await read(blobs, "file-short", 10, 20) == b""


async def test_up_to_max_bytes_is_kept(blobs: BlobStore) -> None:
    assert await blobs.put("file-exact", chunked([b"12345", b"67890"]), max_bytes=10) == 10
    assert await read(blobs, "file-exact") == b"1234567890"


async def test_too_large_keeps_nothing(blobs: BlobStore) -> None:
    with pytest.raises(TooLarge):
        await blobs.put("file-large", chunked([b"12345", b"67890", b"x"]), max_bytes=10)
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-large")


async def test_too_large_leaves_the_previous_bytes_whole(blobs: BlobStore) -> None:
    await blobs.put("file-kept", chunked([b"old bytes"]), max_bytes=MIB)
    with pytest.raises(TooLarge):
        await blobs.put("file-kept", chunked(pieces(b"n" * 5000, 100)), max_bytes=4096)
    assert await read(blobs, "file-kept") == b"old bytes"


async def test_an_upload_whose_client_fails_keeps_nothing(blobs: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"some bytes"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):  # the client's error, not the store's
        await blobs.put("file-cut", broken(), max_bytes=MIB)
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-cut")


async def test_a_cancelled_upload_keeps_nothing(blobs: BlobStore) -> None:
    stalled = asyncio.Event()

    async def quiet_client() -> AsyncIterator[bytes]:
        yield b"some bytes"
        stalled.set()
        await asyncio.Event().wait()  # the rest never comes
        yield b"never"

    put = asyncio.create_task(blobs.put("file-cancelled", quiet_client(), max_bytes=MIB))
    await asyncio.wait_for(stalled.wait(), timeout=10)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-cancelled")
    if isinstance(blobs, LocalBlobs):
        assert _tree(blobs.directory / "files") == []


async def test_writing_a_key_again_replaces_it_whole(blobs: BlobStore) -> None:
    await blobs.put("file-x", chunked([b"a much longer first version"]), max_bytes=MIB)
    await blobs.put("file-x", chunked([b"second", b"!"]), max_bytes=MIB)
    assert await read(blobs, "file-x") == b"second!"


async def test_delete_is_idempotent(blobs: BlobStore) -> None:
    await blobs.put("file-gone", chunked([b"bytes"]), max_bytes=MIB)
    await blobs.delete("file-gone")
    await blobs.delete("file-gone")
    await blobs.delete("file-never-there")
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-gone")


async def test_a_missing_key_raises_on_the_first_iteration(blobs: BlobStore) -> None:
    stream = blobs.get("file-missing")  # only a generator so far: nothing read yet
    with pytest.raises(FileNotFoundError):
        await anext(aiter(stream))
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-missing", 4, 4)  # an empty range still needs the file
    with pytest.raises(FileNotFoundError):
        await read(blobs, "file-missing", 4)


@pytest.mark.parametrize("key", ["../escape", "a/b", "..", ".", ".hidden", "", "a\\b", "a\x00"])
async def test_a_key_that_is_not_one_plain_name_is_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a valid blob key"):
        await blobs.put(key, chunked([b"x"]), max_bytes=MIB)
    with pytest.raises(ValueError, match="not a valid blob key"):
        await read(blobs, key)
    with pytest.raises(ValueError, match="not a valid blob key"):
        await blobs.delete(key)


def _tree(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


async def test_a_key_cannot_escape_the_local_directory(tmp_path: Path) -> None:
    store = LocalBlobs(tmp_path / "store")
    await store.put("file-inside", chunked([b"x"]), max_bytes=MIB)
    with pytest.raises(ValueError, match="not a valid blob key"):
        await store.put("../../outside", chunked([b"x"]), max_bytes=MIB)
    with pytest.raises(ValueError, match="not a valid blob key"):
        await store.delete("../files/file-inside")
    assert _tree(tmp_path) == [
        "store",
        "store/files",
        "store/files/file-inside",
    ]


async def test_local_uploads_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobs(tmp_path)
    await store.put("file-a", chunked(pieces(b"a" * 3 * MIB, 64 * 1024)), max_bytes=10 * MIB)
    with pytest.raises(TooLarge):
        await store.put("file-b", chunked(pieces(b"b" * 3 * MIB, 64 * 1024)), max_bytes=2 * MIB)
    await store.ping()
    assert _tree(tmp_path / "files") == ["file-a"]


async def test_ping(blobs: BlobStore) -> None:
    await blobs.ping()


async def test_local_ping_fails_where_nothing_can_be_written(tmp_path: Path) -> None:
    (tmp_path / "occupied").write_bytes(b"a file where the directory should be")
    with pytest.raises(StorageUnavailable, match="not writable"):
        await LocalBlobs(tmp_path / "occupied").ping()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_large_file_is_never_held_whole_in_memory(blobs: BlobStore) -> None:
    """64 MiB up and down in 1 MiB chunks: the resident size, sampled at every chunk and
    once more when the store asks for a chunk past the last (where a store that gathered
    the whole upload would hold it all), grows by far less than the file. Each chunk is a
    new object, so a store that kept references to them would grow too."""
    one = os.urandom(MIB)
    count = 64
    baseline = _rss()
    peak = baseline

    async def source() -> AsyncIterator[bytes]:
        nonlocal peak
        for _ in range(count):
            peak = max(peak, _rss())
            yield bytes(bytearray(one))
        peak = max(peak, _rss())

    assert await blobs.put("file-huge", source(), max_bytes=count * MIB) == count * MIB
    read_bytes = 0
    async for chunk in blobs.get("file-huge"):
        read_bytes += len(chunk)
        peak = max(peak, _rss())
    assert read_bytes == count * MIB
    await blobs.delete("file-huge")
    assert peak - baseline < 32 * MIB, f"grew {(peak - baseline) / MIB:.1f} MiB"
