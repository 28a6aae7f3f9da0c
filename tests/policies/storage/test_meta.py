"""Every `MetaStore` test runs against each store: `SqliteMeta` on a file in tmp_path, and
`RedisMeta` on a real redis-server started once for the session (`tests/redis_server.py`)
and on a real three-master Redis Cluster (`tests/redis_cluster.py`), each test in its own
key prefix."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Literal

import pytest

from policies.redis_client import RedisAddress
from policies.storage.base import (
    BatchRecord,
    FileRecord,
    LineResult,
    MetaStore,
    StorageUnavailable,
)
from policies.storage.redis_meta import RedisMeta
from policies.storage.sqlite_meta import SqliteMeta

OpenMeta = Callable[[], Awaitable[MetaStore]]


@pytest.fixture(params=["sqlite", "redis", "cluster"])
async def open_meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenMeta]:
    """Opens stores on one shared state, as replicas (Redis, Redis Cluster) or restarts
    (SQLite) do."""
    opened: list[MetaStore] = []
    if request.param == "sqlite":

        async def open_one() -> MetaStore:
            opened.append(await SqliteMeta.open(tmp_path / "db" / "meta.sqlite3"))
            return opened[-1]

    else:
        url: str | RedisAddress = request.getfixturevalue("redis_url")
        if request.param == "cluster":
            url = RedisAddress(url=request.getfixturevalue("redis_cluster_url"), cluster=True)
        prefix = f"test:{uuid.uuid4().hex}:"

        async def open_one() -> MetaStore:
            opened.append(RedisMeta.from_url(url, prefix=prefix))
            return opened[-1]

    yield open_one
    for store in opened:
        await store.aclose()


@pytest.fixture
async def meta(open_meta: OpenMeta) -> MetaStore:
    return await open_meta()


def a_file(file_id: str, created_at: int, owner: str = "team:a", **extra: object) -> FileRecord:
    fields: dict[str, object] = {
        "bytes": 10,
        "filename": f"{file_id}.jsonl",
        "purpose": "batch",
        **extra,
    }
    return FileRecord(id=file_id, owner=owner, created_at=created_at, **fields)


def a_batch(batch_id: str, created_at: int, owner: str = "team:a", **extra: object) -> BatchRecord:
    return BatchRecord(
        id=batch_id,
        owner=owner,
        key_id="k1",
        endpoint="/v1/chat/completions",
        input_file_id="file-in",
        created_at=created_at,
        expires_at=created_at + 86400,
        **extra,
    )


def ids(records: list[FileRecord] | list[BatchRecord]) -> list[str]:
    return [r.id for r in records]


# --- files ------------------------------------------------------------------------------
async def test_file_put_get_replace_delete(meta: MetaStore) -> None:
    record = a_file("file-1", 100)
    await meta.put_file(record)
    assert await meta.get_file("file-1") == record
    assert await meta.get_file("file-2") is None

    renamed = record.model_copy(update={"filename": "renamed.jsonl", "purpose": "vision"})
    await meta.put_file(renamed)
    assert await meta.get_file("file-1") == renamed
    listed = await meta.list_files("team:a", purpose=None, after=None, limit=10, order="asc")
    assert listed == [renamed]  # replaced, not listed twice
    batch_only = await meta.list_files("team:a", purpose="batch", after=None, limit=10, order="asc")
    assert batch_only == []

    assert await meta.delete_file("file-1") is True
    assert await meta.delete_file("file-1") is False
    assert await meta.get_file("file-1") is None
    assert await meta.list_files("team:a", purpose=None, after=None, limit=10, order="asc") == []


async def test_files_pages_in_both_orders_with_ties_by_id(meta: MetaStore) -> None:
    # Two files share a created_at, so the order within it is by id.
    for file_id, created in [("file-c", 200), ("file-a", 100), ("file-e", 300), ("file-b", 200)]:
        await meta.put_file(a_file(file_id, created))

    async def pages(order: Literal["asc", "desc"]) -> list[list[str]]:
        out: list[list[str]] = []
        after: str | None = None
        while True:
            page = await meta.list_files("team:a", purpose=None, after=after, limit=2, order=order)
            if not page:
                return out
            out.append(ids(page))
            after = page[-1].id

    assert await pages("asc") == [["file-a", "file-b"], ["file-c", "file-e"]]
    assert await pages("desc") == [["file-e", "file-c"], ["file-b", "file-a"]]


async def test_files_filtered_by_purpose_and_isolated_by_owner(meta: MetaStore) -> None:
    await meta.put_file(a_file("file-1", 1))
    await meta.put_file(a_file("file-2", 2, purpose="vision"))
    await meta.put_file(a_file("file-3", 3))
    await meta.put_file(a_file("file-4", 4, owner="team:b"))

    def listed(owner: str, **kw: object) -> Awaitable[list[FileRecord]]:
        args: dict[str, object] = {"purpose": None, "after": None, "limit": 10, "order": "asc"}
        return meta.list_files(owner, **{**args, **kw})  # type: ignore[arg-type]

    assert ids(await listed("team:a")) == ["file-1", "file-2", "file-3"]
    assert ids(await listed("team:a", purpose="batch")) == ["file-1", "file-3"]
    # A cursor of another purpose still places the page.
    assert ids(await listed("team:a", purpose="batch", after="file-2")) == ["file-3"]
    assert ids(await listed("team:b")) == ["file-4"]
    # Another owner's file as a cursor, or an unknown one, gives nothing.
    assert await listed("team:a", after="file-4") == []
    assert await listed("team:a", after="file-gone") == []
    assert ids(await listed("team:a", limit=1, order="desc")) == ["file-3"]


async def test_expired_files(meta: MetaStore) -> None:
    await meta.put_file(a_file("file-1", 1, expires_at=50))
    await meta.put_file(a_file("file-2", 1, expires_at=150))
    await meta.put_file(a_file("file-3", 1))
    await meta.put_file(a_file("file-4", 1, expires_at=10))
    assert ids(await meta.expired_files(100, 10)) == ["file-4", "file-1"]
    assert ids(await meta.expired_files(100, 1)) == ["file-4"]
    await meta.put_file(a_file("file-4", 1))  # no longer expires
    await meta.delete_file("file-1")
    assert await meta.expired_files(100, 10) == []
    assert ids(await meta.expired_files(200, 10)) == ["file-2"]


# --- batches ----------------------------------------------------------------------------
async def test_batch_put_get_and_pages_newest_first(meta: MetaStore) -> None:
    for batch_id, created in [("batch_1", 10), ("batch_2", 20), ("batch_3", 20), ("batch_4", 30)]:
        await meta.put_batch(a_batch(batch_id, created))
    await meta.put_batch(a_batch("batch_9", 40, owner="team:b"))
    record = a_batch("batch_1", 10)
    assert await meta.get_batch("batch_1") == record
    assert await meta.get_batch("batch_x") is None

    first = await meta.list_batches("team:a", after=None, limit=2)
    assert ids(first) == ["batch_4", "batch_3"]
    assert ids(await meta.list_batches("team:a", after="batch_3", limit=2)) == [
        "batch_2",
        "batch_1",
    ]
    assert await meta.list_batches("team:a", after="batch_1", limit=2) == []
    assert await meta.list_batches("team:a", after="batch_9", limit=2) == []
    assert ids(await meta.list_batches("team:b", after=None, limit=5)) == ["batch_9"]


async def test_update_batch_compares_and_sets_status(meta: MetaStore) -> None:
    await meta.put_batch(a_batch("batch_1", 10))
    await meta.put_batch(a_batch("batch_2", 5, status="in_progress"))
    await meta.put_batch(a_batch("batch_3", 20, status="completed"))
    assert await meta.active_batches() == ["batch_2", "batch_1"]  # oldest first

    running = a_batch("batch_1", 10, status="in_progress", in_progress_at=11, total=3)
    assert await meta.update_batch(running, ["validating"]) is True
    assert await meta.get_batch("batch_1") == running
    done = running.model_copy(update={"status": "completed", "completed_at": 12})
    assert await meta.update_batch(done, ["validating", "cancelling"]) is False
    assert await meta.get_batch("batch_1") == running  # nothing written
    assert await meta.update_batch(a_batch("batch_x", 1), ["validating"]) is False
    assert await meta.get_batch("batch_x") is None

    assert await meta.update_batch(done, ["in_progress", "finalizing"]) is True
    assert await meta.active_batches() == ["batch_2"]
    cancelling = a_batch("batch_3", 20, status="cancelling")
    assert await meta.update_batch(cancelling, ["completed"]) is True
    assert await meta.active_batches() == ["batch_2", "batch_3"]
    listed = await meta.list_batches("team:a", after=None, limit=10)
    assert [b.status for b in listed] == ["cancelling", "completed", "in_progress"]


# --- leases -----------------------------------------------------------------------------
async def test_claims_never_overlap_and_expired_leases_return(meta: MetaStore) -> None:
    claim = meta.claim_chunk
    assert await claim("b", 3, "r1", 0.0, 10.0) == 0
    assert await claim("b", 3, "r2", 0.0, 10.0) == 1
    assert await claim("b", 3, "r1", 1.0, 10.0) == 2
    assert await claim("b", 3, "r2", 5.0, 10.0) is None  # all held, all live

    await meta.finish_chunk("b", 0, "r1")
    assert await meta.chunks_finished("b") == 1
    # r2's lease on chunk 1 runs out at 10.0; chunk 0 is finished, so never reclaimed.
    assert await claim("b", 3, "r3", 10.0, 10.0) == 1
    assert await meta.renew_chunk("b", 1, "r2", 10.5, 10.0) is False  # r3 holds it now
    assert await meta.renew_chunk("b", 1, "r3", 10.5, 10.0) is True
    assert await meta.renew_chunk("b", 0, "r1", 10.5, 10.0) is False  # finished
    # Chunk 2 (r1, till 11.0) is free at 11.0; chunk 1 was renewed till 20.5.
    assert await claim("b", 3, "r3", 11.0, 10.0) == 2
    assert await claim("b", 3, "r4", 20.0, 10.0) is None
    assert await claim("b", 3, "r4", 20.5, 10.0) == 1
    assert await claim("other", 1, "r4", 20.5, 10.0) == 0  # batches are separate
    await meta.finish_chunk("b", 1, "r4")
    await meta.finish_chunk("b", 2, "r3")
    assert await claim("b", 3, "r5", 1000.0, 10.0) is None
    assert await meta.chunks_finished("b") == 3
    await meta.finish_chunk("b", 7, "r5")  # never claimed: nothing
    assert await meta.chunks_finished("b") == 3


async def test_an_unclaimed_lease_that_ran_out_can_still_be_renewed(meta: MetaStore) -> None:
    assert await meta.claim_chunk("b", 1, "r1", 0.0, 1.0) == 0
    assert await meta.renew_chunk("b", 0, "r1", 5.0, 1.0) is True
    assert await meta.claim_chunk("b", 1, "r2", 5.5, 1.0) is None


async def test_concurrent_claimers_get_each_chunk_once(open_meta: OpenMeta) -> None:
    # Redis: five clients, as five replicas; SQLite: tasks sharing one connection.
    stores = [await open_meta() for _ in range(5)]

    async def claimer(n: int) -> list[int]:
        got = []
        store = stores[n % len(stores)]
        while (chunk := await store.claim_chunk("b", 20, f"r{n}", 0.0, 60.0)) is not None:
            got.append(chunk)
        return got

    results = await asyncio.gather(*(claimer(n) for n in range(50)))
    claimed = [chunk for got in results for chunk in got]
    assert sorted(claimed) == list(range(20))


async def test_named_leases(meta: MetaStore) -> None:
    assert await meta.acquire("finalize:b", "r1", 0.0, 10.0) is True
    assert await meta.acquire("finalize:b", "r2", 5.0, 10.0) is False
    assert await meta.acquire("finalize:b", "r1", 5.0, 10.0) is True  # renewed till 15
    assert await meta.acquire("finalize:b", "r2", 12.0, 10.0) is False
    assert await meta.acquire("other", "r2", 12.0, 10.0) is True
    await meta.release("finalize:b", "r2")  # not r2's: nothing
    assert await meta.acquire("finalize:b", "r2", 14.0, 10.0) is False
    assert await meta.acquire("finalize:b", "r2", 15.0, 10.0) is True  # ran out
    await meta.release("finalize:b", "r2")
    assert await meta.acquire("finalize:b", "r3", 15.5, 10.0) is True


# --- line results -----------------------------------------------------------------------
def a_line(line: int, custom_id: str, ok: bool = True, data: bytes | None = None) -> LineResult:
    return LineResult(line, custom_id, ok, data if data is not None else b'{"n":%d}' % line)


async def test_record_line_first_write_wins(meta: MetaStore) -> None:
    assert await meta.record_line("b", a_line(0, "a")) is True
    assert await meta.record_line("b", a_line(2, "c:\n7", ok=False)) is True
    assert await meta.record_line("b", a_line(0, "a", data=b"late")) is False
    assert await meta.record_line("b", a_line(1, "a")) is False  # custom_id taken
    assert await meta.record_line("b", a_line(0, "z", ok=False)) is False  # line taken
    assert await meta.record_line("other", a_line(0, "a")) is True  # per batch
    assert await meta.line_counts("b") == (1, 1)
    assert await meta.line_counts("nothing") == (0, 0)

    assert await meta.recorded_lines("b", 0, 3) == {0, 2}
    assert await meta.recorded_lines("b", 1, 2) == set()
    assert await meta.line_results("b", 0, 10) == [a_line(0, "a"), a_line(2, "c:\n7", ok=False)]
    assert await meta.line_results("b", 1, 2) == []
    assert await meta.record_line("b", a_line(1, "b", data=b"")) is True
    assert await meta.line_results("b", 1, 2) == [a_line(1, "b", data=b"")]


async def test_concurrent_duplicates_record_once(meta: MetaStore) -> None:
    results = await asyncio.gather(
        *(meta.record_line("b", a_line(n % 4, f"id{n % 4}", data=b"%d" % n)) for n in range(20))
    )
    assert sum(results) == 4
    assert await meta.line_counts("b") == (4, 0)
    assert [r.line for r in await meta.line_results("b", 0, 4)] == [0, 1, 2, 3]


async def test_drop_batch_lines(meta: MetaStore) -> None:
    await meta.put_batch(a_batch("b", 1))
    await meta.record_line("b", a_line(0, "a"))
    await meta.record_line("keep", a_line(0, "a"))
    assert await meta.claim_chunk("b", 2, "r1", 0.0, 10.0) == 0
    await meta.finish_chunk("b", 0, "r1")
    await meta.drop_batch_lines("b")
    assert await meta.line_results("b", 0, 10) == []
    assert await meta.line_counts("b") == (0, 0)
    assert await meta.chunks_finished("b") == 0
    assert await meta.record_line("b", a_line(0, "a")) is True  # the line is free again
    assert await meta.get_batch("b") == a_batch("b", 1)  # the record stays
    assert await meta.line_counts("keep") == (1, 0)


# --- durability -------------------------------------------------------------------------
async def test_a_reopened_store_keeps_everything(open_meta: OpenMeta) -> None:
    first = await open_meta()
    await first.put_file(a_file("file-1", 1, expires_at=5))
    await first.put_batch(a_batch("b", 1, status="in_progress"))
    assert await first.claim_chunk("b", 3, "r1", 0.0, 10.0) == 0
    assert await first.claim_chunk("b", 3, "r1", 0.0, 10.0) == 1
    await first.finish_chunk("b", 0, "r1")
    assert await first.acquire("finalize:b", "r1", 0.0, 10.0)
    await first.record_line("b", a_line(3, "x", ok=False))
    await first.aclose()

    again = await open_meta()  # SQLite: the same file opened anew (the schema kept)
    assert await again.get_file("file-1") == a_file("file-1", 1, expires_at=5)
    assert ids(await again.expired_files(10, 5)) == ["file-1"]
    assert await again.active_batches() == ["b"]
    assert await again.chunks_finished("b") == 1
    assert await again.claim_chunk("b", 3, "r2", 1.0, 10.0) == 2  # 0 finished, 1 held
    assert await again.renew_chunk("b", 1, "r1", 1.0, 10.0) is True
    assert await again.acquire("finalize:b", "r2", 1.0, 10.0) is False
    assert await again.line_results("b", 0, 16) == [a_line(3, "x", ok=False)]
    assert await again.line_counts("b") == (0, 1)
    await again.ping()


# --- outages ----------------------------------------------------------------------------
async def test_a_redis_that_does_not_answer_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisMeta.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    try:
        with pytest.raises(StorageUnavailable):
            await store.ping()
        with pytest.raises(StorageUnavailable):
            await store.claim_chunk("b", 1, "r1", 0.0, 1.0)
    finally:
        await store.aclose()


async def test_a_sqlite_file_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    store = await SqliteMeta.open(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock, as another writer would
        with pytest.raises(StorageUnavailable):
            await store.put_file(a_file("file-1", 1))
        with pytest.raises(StorageUnavailable):
            await store.record_line("b", a_line(0, "a"))
        assert await store.get_file("file-1") is None  # reads go on (WAL)
        other.execute("ROLLBACK")
        assert await store.record_line("b", a_line(0, "a")) is True
    finally:
        other.close()
        await store.aclose()


async def test_opening_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    first = await SqliteMeta.open(path)
    await first.put_batch(a_batch("b", 1))
    second = await SqliteMeta.open(path)  # the schema exists: nothing is recreated
    assert await second.get_batch("b") == a_batch("b", 1)
    await second.aclose()
    await first.aclose()
