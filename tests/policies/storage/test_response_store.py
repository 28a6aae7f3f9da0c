"""Stored responses (`ResponseStore`, part of every `MetaStore`) against both stores, with
test_meta.py's fixtures: `SqliteMeta` on a file in tmp_path, `RedisMeta` on a real
redis-server, each test in its own key prefix. Times are real (`time.time()`): Redis drops
a key at its `expires_at` by its own clock, so a record meant to be readable must expire in
the future."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from policies.storage.base import MetaStore
from policies.storage.redis_meta import RedisMeta
from policies.storage.response_store import ResponseRecord
from policies.storage.sqlite_meta import SqliteMeta
from tests.policies.storage.test_meta import OpenMeta
from tests.policies.storage.test_meta import meta as meta
from tests.policies.storage.test_meta import open_meta as open_meta
from tests.redis_server import redis_url as redis_url

HOUR = 3600


def a_response(
    response_id: str,
    now: float,
    owner: str = "team:a",
    *,
    expires_in: int | None = HOUR,
    text: str = "hello",
    **extra: Any,
) -> ResponseRecord:
    created = int(now)
    return ResponseRecord(
        id=response_id,
        owner=owner,
        created_at=created,
        expires_at=None if expires_in is None else created + expires_in,
        input_items=[{"type": "message", "role": "user", "content": text}],
        response={
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": f"re: {text}", "annotations": []}],
                }
            ],
        },
        **extra,
    )


async def test_put_get_replace_delete(meta: MetaStore) -> None:
    now = time.time()
    first = a_response("resp_1", now, previous_response_id="resp_0")
    await meta.put_response(first)
    assert await meta.get_response("resp_1", now) == first
    assert await meta.get_response("resp_2", now) is None

    replaced = a_response("resp_1", now, text="again")
    await meta.put_response(replaced)
    assert await meta.get_response("resp_1", now) == replaced

    assert await meta.delete_response("resp_1") is True
    assert await meta.get_response("resp_1", now) is None
    assert await meta.delete_response("resp_1") is False


async def test_the_owner_is_kept_and_not_a_filter(meta: MetaStore) -> None:
    # The store returns any owner's record: the door compares owners (another team's 404).
    now = time.time()
    await meta.put_response(a_response("resp_a", now, owner="team:a"))
    await meta.put_response(a_response("resp_b", now, owner="key:k2"))
    for response_id, owner in (("resp_a", "team:a"), ("resp_b", "key:k2")):
        got = await meta.get_response(response_id, now)
        assert got is not None
        assert got.owner == owner


async def test_expired_at_now_is_missing(meta: MetaStore) -> None:
    now = time.time()
    record = a_response("resp_1", now, expires_in=HOUR)
    assert record.expires_at is not None
    await meta.put_response(record)
    assert await meta.get_response("resp_1", record.expires_at - 1) == record
    assert await meta.get_response("resp_1", record.expires_at) is None  # passed at expires_at
    assert await meta.get_response("resp_1", record.expires_at + 1) is None

    forever = a_response("resp_2", now, expires_in=None)
    await meta.put_response(forever)
    assert await meta.get_response("resp_2", now + 100 * 365 * 86400) == forever


async def test_a_record_already_expired_is_never_read(meta: MetaStore) -> None:
    now = time.time()
    await meta.put_response(a_response("resp_old", now - 2 * HOUR, expires_in=HOUR))
    assert await meta.get_response("resp_old", now) is None


async def test_a_large_record_round_trips(meta: MetaStore) -> None:
    # A long conversation's turn: 1 MB of items, one of them a single 256 KB text.
    now = time.time()
    items = [
        {"type": "message", "role": "user", "content": f"{n:06d} " + "x" * 1000}
        for n in range(1000)
    ]
    items.append({"type": "message", "role": "user", "content": "é" * (128 * 1024)})
    record = a_response("resp_big", now).model_copy(update={"input_items": items})
    assert len(record.model_dump_json()) > 1_000_000
    await meta.put_response(record)
    assert await meta.get_response("resp_big", now) == record


async def test_a_reopened_store_and_another_replica_see_the_record(open_meta: OpenMeta) -> None:
    # SQLite: the same file opened anew after a close (a restart); Redis: a second client on
    # the same prefix (another replica), the first still open.
    now = time.time()
    first = await open_meta()
    record = a_response("resp_1", now)
    await first.put_response(record)
    other = await open_meta()
    assert await other.get_response("resp_1", now) == record
    await first.aclose()

    again = await open_meta()
    assert await again.get_response("resp_1", now) == record
    assert await again.delete_response("resp_1") is True
    assert await other.get_response("resp_1", now) is None


# --- SQLite: the sweeper's list, and databases made before stored responses ----------------
async def test_sqlite_lists_expired_responses_oldest_first(tmp_path: Path) -> None:
    store = await SqliteMeta.open(tmp_path / "meta.sqlite3")
    try:
        now = time.time()
        await store.put_response(a_response("resp_late", now, expires_in=10))
        await store.put_response(a_response("resp_due", now, expires_in=0))
        await store.put_response(a_response("resp_old", now, expires_in=-10))
        await store.put_response(a_response("resp_never", now, expires_in=None))
        due = int(now)
        assert await store.expired_responses(due, 10) == ["resp_old", "resp_due"]
        assert await store.expired_responses(due, 1) == ["resp_old"]
        assert await store.expired_responses(due + 10, 10) == ["resp_old", "resp_due", "resp_late"]
        for response_id in await store.expired_responses(due, 10):
            assert await store.delete_response(response_id)
        assert await store.expired_responses(due, 10) == []
        assert await store.get_response("resp_late", due) is not None
    finally:
        await store.aclose()


async def test_sqlite_a_database_made_before_responses_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    await (await SqliteMeta.open(path)).aclose()
    with sqlite3.connect(path) as db:  # as an older Turnout left it: same version, no table
        db.execute("DROP TABLE responses")
        version = db.execute("PRAGMA user_version").fetchone()[0]

    store = await SqliteMeta.open(path)
    try:
        now = time.time()
        await store.put_response(a_response("resp_1", now))
        assert await store.get_response("resp_1", now) is not None
    finally:
        await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version


# --- Redis: one key per response, which Redis expires itself ------------------------------
async def test_redis_keeps_one_key_with_a_ttl_at_expires_at(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store, raw = RedisMeta.from_url(redis_url, prefix=prefix), Redis.from_url(redis_url)
    try:
        now = time.time()
        record = a_response("resp_1", now, expires_in=HOUR)
        await store.put_response(record)
        key = f"{prefix}response:resp_1"
        assert await raw.expiretime(key) == record.expires_at
        assert await raw.keys(f"{prefix}*") == [key.encode()]
        assert await store.expired_responses(now + 2 * HOUR, 10) == []  # Redis expires them

        await store.put_response(a_response("resp_1", now, expires_in=None))
        assert await raw.ttl(key) == -1  # a replaced record's expiry goes with it

        await store.put_response(a_response("resp_2", now - 2 * HOUR, expires_in=HOUR))
        assert await raw.exists(f"{prefix}response:resp_2") == 0  # already past: dropped
    finally:
        await store.aclose()
        await raw.aclose()
