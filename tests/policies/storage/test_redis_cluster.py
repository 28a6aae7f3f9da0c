"""`RedisMeta` on a real three-master Redis Cluster, beyond the shared suite (which runs
there too): batches whose keys land on different masters (CLUSTER KEYSLOT, CLUSTER NODES)
each keep their record and line state in one slot and are listed, run and finished
together; a file and a stored response round trip; and an index entry left without its
record (a crash between a put's two steps) is skipped, the page still filled."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from policies.redis_client import RedisAddress
from policies.storage.base import LineResult
from policies.storage.redis_meta import RedisMeta
from tests.policies.storage.test_meta import a_batch, a_file
from tests.policies.storage.test_response_store import a_response
from tests.redis_cluster import RedisCluster


@pytest.fixture
async def meta(redis_cluster: RedisCluster) -> AsyncIterator[RedisMeta]:
    address = RedisAddress(url=redis_cluster.url, cluster=True)
    store = RedisMeta.from_url(address, prefix=f"test:{uuid.uuid4().hex}:")
    yield store
    await store.aclose()


def batches_on_each_master(cluster: RedisCluster) -> list[str]:
    found: dict[int, str] = {}
    for i in range(1000):
        batch_id = f"batch_{i}"
        found.setdefault(cluster.master_of(cluster.keyslot(f"{{batch:{batch_id}}}")).port, batch_id)
        if len(found) == 3:
            return list(found.values())
    raise AssertionError("no batch ids on three masters")


async def test_batches_on_three_masters(redis_cluster: RedisCluster, meta: RedisMeta) -> None:
    ids = batches_on_each_master(redis_cluster)
    for n, batch_id in enumerate(ids):
        await meta.put_batch(a_batch(batch_id, created_at=100 + n))

    assert [b.id for b in await meta.list_batches("team:a", after=None, limit=10)] == ids[::-1]
    assert sorted(await meta.active_batches()) == sorted(ids)
    for batch_id in ids:
        assert await meta.claim_chunk(batch_id, 2, "runner", 1.0, 30.0) == 0
        line = LineResult(0, f"{batch_id}-0", True, b'{"ok": true}')
        assert await meta.record_line(batch_id, line)
        assert not await meta.record_line(batch_id, line)  # once per line, as on one node
        await meta.finish_chunk(batch_id, 0, "runner")
        assert await meta.line_counts(batch_id) == (1, 0)
        assert await meta.line_results(batch_id, 0, 1) == [line]

    done = a_batch(ids[1], created_at=101, status="completed")
    assert await meta.update_batch(done, ["validating"])
    assert not await meta.update_batch(done, ["validating"])
    assert sorted(await meta.active_batches()) == sorted([ids[0], ids[2]])
    assert (await meta.get_batch(ids[1])) == done


async def test_an_index_entry_without_its_record_is_skipped(meta: RedisMeta) -> None:
    for n in range(5):
        await meta.put_batch(a_batch(f"batch_{n}", created_at=100 + n))
    # As a crash between indexing and recording leaves it: an entry, no record.
    await meta._redis.delete(meta._batch_key("batch_3"))

    page = await meta.list_batches("team:a", after=None, limit=3)
    assert [b.id for b in page] == ["batch_4", "batch_2", "batch_1"]
    rest = await meta.list_batches("team:a", after="batch_1", limit=3)
    assert [b.id for b in rest] == ["batch_0"]


async def test_files_and_responses_round_trip(meta: RedisMeta) -> None:
    record = a_file("file-1", 100, expires_at=50)
    await meta.put_file(record)
    assert await meta.get_file("file-1") == record
    assert [
        f.id
        for f in await meta.list_files("team:a", purpose="batch", after=None, limit=5, order="asc")
    ] == ["file-1"]
    assert [f.id for f in await meta.expired_files(60.0, 10)] == ["file-1"]
    assert await meta.delete_file("file-1")

    now = time.time()
    response = a_response("resp_1", now)
    await meta.put_response(response)
    assert await meta.get_response("resp_1", now) == response
    assert await meta.delete_response("resp_1")
