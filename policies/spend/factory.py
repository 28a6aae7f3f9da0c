"""Choosing where spend is kept: the Redis that `state` names when there is one (spend
is shared by every replica there, as limits and dollar budgets are, whatever
`storage.single_replica` says of files), else SQLite beside the files' records."""

from __future__ import annotations

from policies.config import TurnoutConfig
from policies.redis_client import RedisAddress
from policies.spend.redis_spend import RedisSpend
from policies.spend.sqlite_spend import SqliteSpend
from policies.spend.store import SpendStore

DATABASE = "spend.sqlite3"


async def open_spend_store(config: TurnoutConfig) -> SpendStore:
    address = RedisAddress.of(config.state)
    if address is not None:
        timeout_s = max(config.state.timeout, 2.0)  # a flush carries many rows
        return RedisSpend.from_address(address, prefix=config.state.prefix, timeout_s=timeout_s)
    return await SqliteSpend.open(config.storage.directory() / DATABASE)
