"""Spend in the Redis that `state` names, shared by every replica: one hash per UTC day,
hash-tagged by the day (`<prefix>{spend:<day>}`), a field per row and total
(`<team>␟<key>␟<model>␟<deployment>␟<total>`), added to with HINCRBY. One day's
increments go in one script, so a flush adds a day's rows all or none (a script touches
one key: one slot on a cluster). A day's hash is kept for `RETENTION_DAYS`."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from policies.redis_client import RedisAddress, RedisClient, connect, reachable
from policies.spend.rows import FIELDS, DayRange, Rows, SpendKey, Totals
from policies.storage.base import StorageUnavailable

RETENTION_DAYS = 400
SEPARATOR = "\x1f"  # the ASCII unit separator: in no configured name

_ADD = """
for i = 1, #ARGV - 1, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV])
return 1
"""


def _reachable() -> AbstractContextManager[None]:
    return reachable(StorageUnavailable)


class RedisSpend:
    """Owns `client`: `aclose` closes it."""

    def __init__(self, client: RedisClient, *, prefix: str = "turnout:", where: str = "") -> None:
        self._redis, self._prefix, self._where = client, prefix, where
        self._add = client.register_script(_ADD)

    @classmethod
    def from_address(cls, address: RedisAddress, *, prefix: str, timeout_s: float) -> RedisSpend:
        return cls(connect(address, timeout_s), prefix=prefix, where=address.display())

    def day_key(self, day: int) -> str:
        return f"{self._prefix}{{spend:{day}}}"

    async def add(self, rows: Mapping[SpendKey, Totals]) -> None:
        by_day: dict[int, list[str | int]] = {}
        for key, totals in rows.items():
            name = SEPARATOR.join(key[1:])
            args = by_day.setdefault(key.day, [])
            for field, value in zip(FIELDS, totals, strict=True):
                if value:
                    args += (f"{name}{SEPARATOR}{field}", value)
        with _reachable():
            for day, args in by_day.items():
                await self._add(keys=[self.day_key(day)], args=[*args, RETENTION_DAYS * 86400])

    async def read(self, days: DayRange) -> Rows:
        found: Rows = {}
        with _reachable():
            for day in days.days():
                stored = await self._redis.hgetall(self.day_key(day))
                for raw, value in stored.items():
                    parts = (raw.decode() if isinstance(raw, bytes) else raw).split(SEPARATOR)
                    if len(parts) != 5 or parts[4] not in FIELDS:
                        continue  # not a field this version writes
                    key = SpendKey(day, *parts[:4])
                    if key in days:
                        totals = found.setdefault(key, [0] * len(FIELDS))
                        totals[FIELDS.index(parts[4])] += int(value)
        return found

    async def aclose(self) -> None:
        await self._redis.aclose()

    def describe(self) -> str:
        return f"redis {self._where}".strip()
