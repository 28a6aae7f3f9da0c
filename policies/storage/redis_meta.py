"""`RedisMeta`: the `MetaStore` that several Turnout replicas share through one Redis (or a
Redis Cluster), and through which they drain one batch together.

Every read-then-write is one Lua script (`redis_meta_scripts.py`), so two replicas never
claim one chunk at once nor record one line twice. Keys live under a prefix (default
`turnout:`), and no script touches two hash slots, so all of it runs on Redis Cluster:

- files, their owner and purpose indexes and the expiry set share the tag `{files}` (one
  slot: every change of a file touches the global expiry set; file records are few and
  small);
- a batch's record and its line state (leases, lines, counts) share `{batch:<id>}`, so the
  busy scripts of different batches spread over the cluster;
- the batches' owner indexes and the active set share `{batches}`. Putting a batch writes
  its index entries first, then its record (two scripts, two slots), and changing its
  status writes the record, then the active set: a crash between the two leaves at worst
  an index entry whose record is missing or has ended, which listings and the runner skip;
- a named lease, a stored response: one key each.

Key names changed when the tags came (issue 13): records written under the old names are
not read (nothing is migrated; a Redis Cluster starts empty anyway).

Unlike the state store's keys, nothing here has a TTL (a batch's records must outlive any
quiet spell), except a named lease a dead replica never gave back, and a stored response
(one key each, which Redis drops at its `expires_at`); `drop_batch_lines` deletes a
batch's line state.

A line costs its output line, its custom_id twice (in the value, and in the custom_id ->
line hash that keeps it unique) and a few bytes of framing, as a Redis hash holds only
strings: the value is the ok flag (one digit), the custom_id's length, ':', the custom_id,
then the output line.

redis-py's errors stop here, as in `policies/state/redis_store.py`: an outage is raised as
`StorageUnavailable`; anything else (a script error, a bad reply) is a bug and stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from policies.redis_client import RedisAddress, RedisClient, connect, reachable
from policies.storage import redis_meta_scripts as scripts
from policies.storage.base import ACTIVE, BatchRecord, FileRecord, LineResult, StorageUnavailable
from policies.storage.response_store import ResponseRecord

# Each command waits at most this long for a connection, and again for its answer; longer
# than the state store's, as a batch record (its chunk offsets) can be tens of kilobytes.
DEFAULT_TIMEOUT_S = 2.0
# A named lease's key outlives its lease by this long (server clock) before Redis drops it.
LEASE_GRACE_S = 24 * 3600.0
_Arg = str | int | float | bytes


def _reachable() -> AbstractContextManager[None]:
    return reachable(StorageUnavailable)


def _member(created_at: int, record_id: str) -> str:
    """An index member: sorts as (created_at, id) under ZRANGEBYLEX (times are >= 0)."""
    return f"{created_at:012d}:{record_id}"


class RedisMeta:
    """Records and line state in Redis. Owns `client`: `aclose` closes it."""

    def __init__(self, client: RedisClient, *, prefix: str = "turnout:") -> None:
        self._redis = client
        self._prefix = prefix
        self._put_file = client.register_script(scripts.PUT_FILE)
        self._delete_file = client.register_script(scripts.DELETE_FILE)
        self._list = client.register_script(scripts.LIST_FILES)
        self._index_batch = client.register_script(scripts.INDEX_BATCH)
        self._put_batch = client.register_script(scripts.PUT_BATCH)
        self._update_batch = client.register_script(scripts.UPDATE_BATCH)
        self._claim = client.register_script(scripts.CLAIM_CHUNK)
        self._renew = client.register_script(scripts.RENEW_CHUNK)
        self._finish = client.register_script(scripts.FINISH_CHUNK)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._release = client.register_script(scripts.RELEASE)
        self._record = client.register_script(scripts.RECORD_LINE)
        self._recorded = client.register_script(scripts.RECORDED_LINES)

    @classmethod
    def from_url(
        cls,
        url: str | RedisAddress,
        *,
        prefix: str = "turnout:",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> RedisMeta:
        """E.g. `redis://localhost:6379/0`, or a cluster's `RedisAddress`: see
        `policies.redis_client.connect`."""
        client = connect(url, timeout_s)
        return cls(client, prefix=prefix)

    async def ping(self) -> None:
        with _reachable():
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()

    # --- keys ---------------------------------------------------------------------------
    @property
    def _files(self) -> str:
        """Every file key starts so: one hash tag, one slot."""
        return f"{self._prefix}{{files}}:"

    def _file_key(self, file_id: str) -> str:
        return f"{self._files}file:{file_id}"

    def _batch_key(self, batch_id: str, part: str = "") -> str:
        return f"{self._prefix}{{batch:{batch_id}}}{part}"

    def _batches_index(self, owner: str) -> str:
        return f"{self._prefix}{{batches}}:owner:{owner}"

    @property
    def _active_key(self) -> str:
        return f"{self._prefix}{{batches}}:active"

    # --- files --------------------------------------------------------------------------
    async def put_file(self, record: FileRecord) -> None:
        p = self._files
        keys = [
            self._file_key(record.id),
            f"{p}owner:{record.owner}",
            f"{p}purpose:{record.purpose}:{record.owner}",
            self._expiring_key,
        ]
        args: list[_Arg] = [
            record.model_dump_json(),
            record.owner,
            _member(record.created_at, record.id),
            record.purpose,
            f"{p}owner:",
            f"{p}purpose:",
            record.id,
            "" if record.expires_at is None else record.expires_at,
        ]
        with _reachable():
            await self._put_file(keys=keys, args=args)

    async def get_file(self, file_id: str) -> FileRecord | None:
        with _reachable():
            raw = await self._redis.hget(self._file_key(file_id), "json")
        return None if raw is None else FileRecord.model_validate_json(raw)

    async def list_files(
        self,
        owner: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> list[FileRecord]:
        """An `after` that names no file of `owner` (e.g. one deleted since) gives an
        empty page: its place in the order is unknown, and starting over would loop."""
        p = self._files
        index = f"{p}owner:{owner}" if purpose is None else f"{p}purpose:{purpose}:{owner}"
        keys = [index] if after is None else [index, self._file_key(after)]
        with _reachable():
            reply = await self._list(keys=keys, args=[order, limit, owner, f"{p}file:"])
        return [FileRecord.model_validate_json(row) for row in _as_list(reply)]

    async def delete_file(self, file_id: str) -> bool:
        keys = [self._file_key(file_id), self._expiring_key]
        args = [f"{self._files}owner:", f"{self._files}purpose:", file_id]
        with _reachable():
            return bool(await self._delete_file(keys=keys, args=args))

    async def expired_files(self, now: float, limit: int) -> list[FileRecord]:
        with _reachable():
            ids = await self._redis.zrangebyscore(self._expiring_key, "-inf", now, 0, limit)
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for file_id in ids:
                    pipe.hget(self._file_key(_text(file_id)), "json")
                raws = await pipe.execute()
        return [FileRecord.model_validate_json(raw) for raw in raws if raw is not None]

    @property
    def _expiring_key(self) -> str:
        return f"{self._files}expiring"

    # --- batches ------------------------------------------------------------------------
    async def put_batch(self, record: BatchRecord) -> None:
        member = _member(record.created_at, record.id)
        index = self._batches_index(record.owner)
        active = int(record.status in ACTIVE)
        record_args: list[_Arg] = [record.model_dump_json(), record.owner, member, record.status]
        with _reachable():
            index_args: list[_Arg] = [member, active, record.created_at, record.id]
            await self._index_batch(keys=[index, self._active_key], args=index_args)
            key = self._batch_key(record.id)
            old = _as_list(await self._put_batch(keys=[key], args=record_args))
            if old and (_text(old[0]), _text(old[1])) != (record.owner, member):
                await self._redis.zrem(self._batches_index(_text(old[0])), _text(old[1]))

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        with _reachable():
            raw = await self._redis.hget(self._batch_key(batch_id), "json")
        return None if raw is None else BatchRecord.model_validate_json(raw)

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """As `list_files`: an unknown `after` gives an empty page. The index and the records
        are in different slots, so this reads the index, then the records it names,
        skipping an entry whose record is missing or has moved (left by a crash between a
        put's two steps), and reading on until the page is full or the index ends."""
        hi = "+"
        if after is not None:
            with _reachable():
                cursor = await self._redis.hmget(self._batch_key(after), ["owner", "member"])
            if cursor[0] is None or _text(cursor[0]) != owner:
                return []
            hi = f"({_text(cursor[1])}"
        index, found = self._batches_index(owner), list[BatchRecord]()
        while len(found) < limit:
            with _reachable():
                members = await self._redis.zrevrangebylex(index, hi, "-", 0, limit - len(found))
            if not members:
                break
            found += await self._batches_listed(owner, [_text(m) for m in members])
            hi = f"({_text(members[-1])}"
        return found

    async def _batches_listed(self, owner: str, members: Sequence[str]) -> list[BatchRecord]:
        with _reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(self._batch_key(member[13:]), ["json", "owner", "member"])
                rows = await pipe.execute()
        return [
            BatchRecord.model_validate_json(json)
            for member, (json, row_owner, row_member) in zip(members, rows, strict=True)
            if json is not None and _text(row_owner) == owner and _text(row_member) == member
        ]

    async def update_batch(self, record: BatchRecord, expect: Sequence[str]) -> bool:
        if not expect:
            return False
        args: list[_Arg] = [record.model_dump_json(), record.status, *expect]
        with _reachable():
            member = await self._update_batch(keys=[self._batch_key(record.id)], args=args)
            if member is None:
                return False
            if record.status in ACTIVE:
                await self._redis.zadd(self._active_key, {record.id: int(_text(member)[:12])})
            else:
                await self._redis.zrem(self._active_key, record.id)
        return True

    async def active_batches(self) -> list[str]:
        with _reachable():
            ids = await self._redis.zrange(self._active_key, 0, -1)
        return [_text(i) for i in ids]

    # --- leases -------------------------------------------------------------------------
    def _chunk_keys(self, batch_id: str) -> list[str]:
        """Lease ends (zset chunk -> time), holders (hash chunk -> holder), finished (set),
        next never-claimed chunk (counter)."""
        return [
            self._batch_key(batch_id, f":{x}") for x in ("leases", "holders", "finished", "next")
        ]

    async def claim_chunk(
        self, batch_id: str, chunks: int, holder: str, now: float, lease_s: float
    ) -> int | None:
        leases, holders, _, next_key = self._chunk_keys(batch_id)
        args: list[_Arg] = [chunks, holder, now, lease_s]
        with _reachable():
            keys = [leases, holders, next_key, self._batch_key(batch_id)]
            reply = await self._claim(keys=keys, args=args)
        return None if reply is None else int(reply)

    async def renew_chunk(
        self, batch_id: str, chunk: int, holder: str, now: float, lease_s: float
    ) -> bool:
        """A lease that ran out is still renewed while nobody else has claimed the chunk."""
        leases, holders, _, _ = self._chunk_keys(batch_id)
        args: list[_Arg] = [chunk, holder, now, lease_s]
        with _reachable():
            return bool(await self._renew(keys=[leases, holders], args=args))

    async def finish_chunk(self, batch_id: str, chunk: int, holder: str) -> None:
        """Whoever says so: "finished" means every line is recorded, which is true whoever
        recorded them. A chunk never claimed is left as it is (nothing of it ran)."""
        with _reachable():
            await self._finish(keys=self._chunk_keys(batch_id), args=[chunk])

    async def chunks_finished(self, batch_id: str) -> int:
        with _reachable():
            return int(await self._redis.scard(self._batch_key(batch_id, ":finished")))

    async def acquire(self, name: str, holder: str, now: float, lease_s: float) -> bool:
        args: list[_Arg] = [holder, now, lease_s, LEASE_GRACE_S]
        with _reachable():
            return bool(await self._acquire(keys=[self._lease_key(name)], args=args))

    async def release(self, name: str, holder: str) -> None:
        with _reachable():
            await self._release(keys=[self._lease_key(name)], args=[holder])

    def _lease_key(self, name: str) -> str:
        return f"{self._prefix}lease:{name}"

    # --- line results -------------------------------------------------------------------
    def _line_keys(self, batch_id: str) -> list[str]:
        """Lines (hash line -> value), custom_ids (hash custom_id -> line), counts (hash)."""
        return [self._batch_key(batch_id, f":{x}") for x in ("lines", "ids", "counts")]

    async def record_line(self, batch_id: str, result: LineResult) -> bool:
        custom_id = result.custom_id.encode()
        value = b"%d%d:%b%b" % (result.ok, len(custom_id), custom_id, result.data)
        counter = "completed" if result.ok else "failed"
        args: list[_Arg] = [result.line, custom_id, counter, value]
        with _reachable():
            keys = [*self._line_keys(batch_id), self._batch_key(batch_id)]
            return bool(await self._record(keys=keys, args=args))

    async def recorded_lines(self, batch_id: str, start: int, stop: int) -> set[int]:
        if stop <= start:
            return set()
        lines_key = self._line_keys(batch_id)[0]
        with _reachable():
            reply = await self._recorded(keys=[lines_key], args=[start, stop])
        return {int(line) for line in _as_list(reply)}

    async def line_counts(self, batch_id: str) -> tuple[int, int]:
        counts_key = self._line_keys(batch_id)[2]
        with _reachable():
            completed, failed = await self._redis.hmget(counts_key, ["completed", "failed"])
        return int(completed or 0), int(failed or 0)

    async def line_results(self, batch_id: str, start: int, stop: int) -> list[LineResult]:
        if stop <= start:
            return []
        lines = range(start, stop)
        with _reachable():
            values = await self._redis.hmget(self._line_keys(batch_id)[0], list(lines))
        return [
            _line(line, _bytes(v)) for line, v in zip(lines, values, strict=True) if v is not None
        ]

    async def drop_batch_lines(self, batch_id: str) -> None:
        with _reachable():
            await self._redis.delete(*self._chunk_keys(batch_id), *self._line_keys(batch_id))

    # --- stored responses ---------------------------------------------------------------
    def _response_key(self, response_id: str) -> str:
        return f"{self._prefix}response:{response_id}"

    async def put_response(self, record: ResponseRecord) -> None:
        """The record's JSON under one key, which Redis drops itself at `expires_at` (its
        own clock), so no sweeper is needed. SET and EXPIREAT in one MULTI: a record is
        never kept without its expiry, and SET clears a replaced record's old one."""
        key = self._response_key(record.id)
        with _reachable():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, record.model_dump_json())
                if record.expires_at is not None:
                    pipe.expireat(key, record.expires_at)
                await pipe.execute()

    async def get_response(self, response_id: str, now: float) -> ResponseRecord | None:
        """Past `expires_at` at `now` is missing, even while Redis (whose clock may lag
        ours) still holds the key."""
        with _reachable():
            raw = await self._redis.get(self._response_key(response_id))
        if raw is None:
            return None
        record = ResponseRecord.model_validate_json(raw)
        if record.expires_at is not None and record.expires_at <= now:
            return None
        return record

    async def delete_response(self, response_id: str) -> bool:
        with _reachable():
            return bool(await self._redis.delete(self._response_key(response_id)))

    async def expired_responses(self, now: float, limit: int) -> list[str]:
        """None: Redis expires the keys itself."""
        return []


def _line(line: int, value: bytes) -> LineResult:
    """Undo `record_line`'s framing: ok (one digit), len(custom_id), ':', custom_id, data."""
    colon = value.index(b":")
    size = int(value[1:colon])
    custom_id = value[colon + 1 : colon + 1 + size].decode()
    return LineResult(line, custom_id, value[:1] == b"1", value[colon + 1 + size :])


def _text(value: Any) -> str:
    """redis-py's replies are bytes, or str from a client made with decode_responses=True."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _as_list(reply: Any) -> list[Any]:
    """A script's reply is untyped; the scripts here that return arrays return them."""
    if not isinstance(reply, list):
        raise TypeError(f"unexpected reply from a Redis script: {reply!r}")
    return reply
