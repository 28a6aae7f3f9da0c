"""The spend book adds requests up in memory and flushes them, as increments, to SQLite
or to a real Redis; reads see the store plus what is not flushed yet; a store that
cannot be reached keeps the rows for the next flush."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from policies.pricing.cost import DeploymentCost, RequestCost
from policies.redis_client import RedisAddress
from policies.spend.book import SpendBook
from policies.spend.redis_spend import RedisSpend
from policies.spend.rows import DayRange, Rows, SpendKey, Totals
from policies.spend.sqlite_spend import SqliteSpend
from policies.spend.store import SpendStore
from policies.storage.base import StorageUnavailable
from tests.redis_cluster import redis_cluster as redis_cluster
from tests.redis_cluster import redis_cluster_url as redis_cluster_url
from tests.redis_server import redis_url as redis_url

DAY = 20_000  # 2024-10-04
NOW = DAY * 86400.0 + 3600
Opener = Callable[[], Awaitable[SpendStore]]


def cost(*shares: tuple[str, float | None, int, int]) -> RequestCost:
    parts = tuple(DeploymentCost(label, usd, 1, p, c) for label, usd, p, c in shares)
    usd = sum(s.usd for s in parts if s.usd is not None)
    unpriced = tuple(s.label for s in parts if s.usd is None)
    return RequestCost(usd, unpriced, len(parts), parts)


@pytest.fixture(params=["sqlite", "redis", "cluster"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens stores that share one spend, as replicas (or a restarted server) do: SQLite,
    one Redis node, and a three-master Redis Cluster (a day's hash is one slot)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    if request.param == "cluster":
        url: str = request.getfixturevalue("redis_cluster_url")
        address = RedisAddress(url=url, cluster=True)
    elif request.param == "redis":
        address = RedisAddress(url=request.getfixturevalue("redis_url"))

    async def open_store() -> SpendStore:
        if request.param == "sqlite":
            return await SqliteSpend.open(tmp_path / "spend.sqlite3")
        return RedisSpend.from_address(address, prefix=prefix, timeout_s=2)

    return open_store


async def test_requests_add_up_per_deployment_and_count_once(opener: Opener) -> None:
    book = SpendBook(lambda: NOW)
    book.start(await opener())
    # A failover: the first deployment billed a broken stream, the second answered.
    book.record("t", "k1", "m", cost(("a", 0.001, 10, 5), ("b", 0.002, 10, 7)), "b")
    book.record("t", "k1", "m", cost(("b", 0.0005, 3, 4)), "b")
    book.record("t", "k2", "m", cost(("u", None, 8, 2)), "u")  # unpriced
    book.record("t", "k2", "m", RequestCost(), None)  # a cache hit: no call
    await book.flush()
    book.record("other", "k3", "m", cost(("a", 0.25, 1, 1)), "a")  # not flushed yet
    rows = await book.read(DayRange(DAY, DAY))
    assert rows == {
        SpendKey(DAY, "t", "k1", "m", "a"): [1_000_000, 0, 10, 5, 0],
        SpendKey(DAY, "t", "k1", "m", "b"): [2_500_000, 2, 13, 11, 0],
        SpendKey(DAY, "t", "k2", "m", "u"): [0, 1, 8, 2, 1],
        SpendKey(DAY, "t", "k2", "m", ""): [0, 1, 0, 0, 0],
        SpendKey(DAY, "other", "k3", "m", "a"): [250_000_000, 1, 1, 1, 0],
    }
    only_t = await book.read(DayRange(DAY, DAY, "t"))
    assert {key.team for key in only_t} == {"t"}
    assert await book.read(DayRange(DAY + 1, DAY + 7)) == {}
    await book.aclose()


async def test_flushed_spend_survives_and_adds_to_another_book(opener: Opener) -> None:
    """Two books on one store (two replicas, or one restarted) add to the same rows."""
    first, second = SpendBook(lambda: NOW), SpendBook(lambda: NOW)
    first.start(await opener())
    second.start(await opener())
    for book in (first, second):
        book.record("t", "k", "m", cost(("a", 0.000123, 100, 20)), "a")
    await first.aclose()  # flushed on close
    await second.aclose()
    reopened = SpendBook(lambda: NOW)
    reopened.start(await opener())
    rows = await reopened.read(DayRange(DAY - 1, DAY))
    assert rows == {SpendKey(DAY, "t", "k", "m", "a"): [246_000, 2, 200, 40, 0]}
    await reopened.aclose()


class Outage:
    """A store that cannot be reached until `up`; then it keeps what it is given."""

    def __init__(self) -> None:
        self.up = False
        self.kept: Rows = {}

    async def add(self, rows: Mapping[SpendKey, Totals]) -> None:
        if not self.up:
            raise StorageUnavailable("down")
        self.kept.update({k: list(v) for k, v in rows.items()})

    async def read(self, days: DayRange) -> Rows:
        return dict(self.kept)

    async def aclose(self) -> None:
        pass

    def describe(self) -> str:
        return "outage"


async def test_a_failed_flush_keeps_the_rows_for_the_next() -> None:
    store = Outage()
    book = SpendBook(lambda: NOW)
    book.start(store)
    book.record("t", "k", "m", cost(("a", 1.0, 1, 1)), "a")
    await book.flush()
    assert store.kept == {}
    assert (await book.read(DayRange(DAY, DAY)))[SpendKey(DAY, "t", "k", "m", "a")][0] == 10**9
    book.record("t", "k", "m", cost(("a", 1.0, 1, 1)), "a")
    store.up = True
    await book.flush()
    assert store.kept == {SpendKey(DAY, "t", "k", "m", "a"): [2 * 10**9, 2, 2, 2, 0]}
    await book.aclose()


async def test_the_book_flushes_in_the_background(tmp_path: Path) -> None:
    store = await SqliteSpend.open(tmp_path / "spend.sqlite3")
    book = SpendBook(lambda: NOW, interval_s=0.01)
    book.start(store)
    book.record("t", "k", "m", cost(("a", 0.5, 1, 1)), "a")
    for _ in range(200):
        if await store.read(DayRange(DAY, DAY)):
            break
        await asyncio.sleep(0.01)
    assert await store.read(DayRange(DAY, DAY)) == {
        SpendKey(DAY, "t", "k", "m", "a"): [500_000_000, 1, 1, 1, 0]
    }
    await book.aclose()
