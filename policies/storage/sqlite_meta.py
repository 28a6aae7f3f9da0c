"""`SqliteMeta`: the `MetaStore` of one replica, a SQLite database in WAL mode.

One `aiosqlite` connection, so one writer thread, and one `asyncio.Lock` around every
statement group: the connection is shared by every task of the process, and without the
lock one task's `BEGIN ... COMMIT` could take in another task's statements (or let it read
rows not yet committed). SQLite itself only sees one writer at a time then, so "database is
locked" only comes from another process holding the file (e.g. `turnout batches list`
mid-read during a checkpoint), and waits `busy_timeout_s` before it is an outage.

`synchronous=NORMAL`: in WAL mode a commit is then durable against the process dying
(SIGKILL, a crash: the WAL is in the OS's cache) and the database is never corrupted; only
a power loss or an OS crash can roll back the last commits. That loses nothing the runner
cannot redo: a line whose commit was lost is not recorded, so it is run again, and it is
still written once. FULL would fsync on every line's commit, the bulk of a batch's cost.

Foreign keys are off (the default): chunks, lines and counts are dropped by batch id, and
no row references another through a constraint.

sqlite's errors stop here: those that mean the file cannot be used now (busy, locked, I/O,
full, cannot open, read-only) are raised as `StorageUnavailable`; anything else (a
constraint, a malformed statement) is a bug and stays what it is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from policies.storage.base import ACTIVE, BatchRecord, FileRecord, LineResult, StorageUnavailable
from policies.storage.group_commit import GroupCommit
from policies.storage.sqlite_responses import PUT as PUT_RESPONSE
from policies.storage.sqlite_responses import SCHEMA as RESPONSES_SCHEMA
from policies.storage.sqlite_responses import SqliteResponses

# Bumped by a change of the schema below; `open` refuses a database from a newer Turnout.
# A table added with `IF NOT EXISTS` (stored responses' RESPONSES_SCHEMA) is no change:
# an older Turnout ignores it, and an older database gains it on its next open.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL,
  purpose TEXT NOT NULL, expires_at INTEGER, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, created_at, id);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
  created_at INTEGER NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS batches_by_owner ON batches (owner, created_at, id);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status, created_at, id);
CREATE TABLE IF NOT EXISTS chunks (
  batch_id TEXT NOT NULL, chunk INTEGER NOT NULL, holder TEXT, expires REAL NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (batch_id, chunk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
  name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lines (
  batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL,
  ok INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (batch_id, line), UNIQUE (batch_id, custom_id));
CREATE TABLE IF NOT EXISTS line_counts (
  batch_id TEXT PRIMARY KEY, completed INTEGER NOT NULL, failed INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS count_lines AFTER INSERT ON lines BEGIN
  INSERT INTO line_counts VALUES (NEW.batch_id, NEW.ok, 1 - NEW.ok)
  ON CONFLICT (batch_id) DO UPDATE SET completed = completed + excluded.completed,
  failed = failed + excluded.failed;
END;
"""
# How long a statement waits for another process's lock before it is an outage.
DEFAULT_BUSY_TIMEOUT_S = 5.0
# Primary result codes (an extended code's low byte) that mean "not usable now".
_OUTAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
_ACTIVE = tuple(sorted(ACTIVE))


@contextmanager
def _available() -> Iterator[None]:
    """The one place sqlite's outage errors become Turnout's."""
    try:
        yield
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _OUTAGE_CODES:
            raise
        raise StorageUnavailable(f"sqlite: {exc}") from exc


class SqliteMeta(SqliteResponses):
    """Records and line state in one SQLite file, and stored responses (`SqliteResponses`).
    Owns its connection: `aclose` closes it."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        """Use `open`; this takes a connection already set up by it."""
        self._db = db
        self._lock = asyncio.Lock()
        self._stored = GroupCommit(self._put_responses)

    @property
    def _responses(self) -> GroupCommit:
        return self._stored

    async def _put_responses(self, rows: Sequence[tuple[Any, ...]]) -> None:
        async with self._write() as db:
            await db.executemany(PUT_RESPONSE, rows)

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> SqliteMeta:
        """Open (creating it and its directory if missing) the database at `path`, and
        create the tables it lacks; opening an existing database changes nothing in it."""
        with _available():
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level None: no implicit transactions; `_write` opens its own.
            db = await aiosqlite.connect(path, timeout=busy_timeout_s, isolation_level=None)
            try:
                await _set_up(db)
            except BaseException:
                await db.close()
                raise
        return cls(db)

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def aclose(self) -> None:
        await self._db.close()

    # --- plumbing -----------------------------------------------------------------------
    async def _fetch(self, sql: str, params: Iterable[Any]) -> list[Any]:
        with _available():
            async with self._lock:
                return list(await self._db.execute_fetchall(sql, params))

    async def _change(self, sql: str, params: Iterable[Any]) -> int:
        """Run one writing statement (atomic on its own); the rows it changed."""
        with _available():
            async with self._lock, self._db.execute(sql, params) as cursor:
                return cursor.rowcount

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A transaction of several statements: committed on exit, rolled back on error.
        IMMEDIATE takes the write lock at once, so a reader in another process cannot
        make it fail half-way when it upgrades."""
        with _available():
            async with self._lock:
                if self._db.in_transaction:
                    # Left open by a task cancelled while it rolled back: finish that first.
                    await self._db.rollback()
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    await self._db.rollback()
                    raise
                await self._db.commit()

    # --- files --------------------------------------------------------------------------
    async def put_file(self, record: FileRecord) -> None:
        await self._change(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                record.created_at,
                record.purpose,
                record.expires_at,
                record.model_dump_json(),
            ),
        )

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._fetch("SELECT json FROM files WHERE id = ?", (file_id,))
        return FileRecord.model_validate_json(rows[0][0]) if rows else None

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
        where, params = "owner = ?", [owner]
        if purpose is not None:
            where += " AND purpose = ?"
            params.append(purpose)
        if after is not None:
            # The cursor's (created_at, id) is looked up in the same statement.
            compare = ">" if order == "asc" else "<"
            where += (
                f" AND (created_at, id) {compare}"
                " (SELECT created_at, id FROM files WHERE id = ? AND owner = ?)"
            )
            params += [after, owner]
        direction = "ASC" if order == "asc" else "DESC"
        sql = (
            f"SELECT json FROM files WHERE {where}"
            f" ORDER BY created_at {direction}, id {direction} LIMIT ?"
        )
        rows = await self._fetch(sql, [*params, limit])
        return [FileRecord.model_validate_json(row[0]) for row in rows]

    async def delete_file(self, file_id: str) -> bool:
        return await self._change("DELETE FROM files WHERE id = ?", (file_id,)) > 0

    async def expired_files(self, now: float, limit: int) -> list[FileRecord]:
        rows = await self._fetch(
            "SELECT json FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?"
            " ORDER BY expires_at, id LIMIT ?",
            (now, limit),
        )
        return [FileRecord.model_validate_json(row[0]) for row in rows]

    # --- batches ------------------------------------------------------------------------
    async def put_batch(self, record: BatchRecord) -> None:
        await self._change(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
            (record.id, record.owner, record.status, record.created_at, record.model_dump_json()),
        )

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = await self._fetch("SELECT json FROM batches WHERE id = ?", (batch_id,))
        return BatchRecord.model_validate_json(rows[0][0]) if rows else None

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """As `list_files`: an unknown `after` gives an empty page."""
        where, params = "owner = ?", [owner]
        if after is not None:
            where += (
                " AND (created_at, id) < (SELECT created_at, id FROM batches"
                " WHERE id = ? AND owner = ?)"
            )
            params += [after, owner]
        rows = await self._fetch(
            f"SELECT json FROM batches WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [BatchRecord.model_validate_json(row[0]) for row in rows]

    async def update_batch(self, record: BatchRecord, expect: Sequence[str]) -> bool:
        if not expect:
            return False
        marks = ", ".join("?" * len(expect))
        changed = await self._change(
            f"UPDATE batches SET status = ?, json = ? WHERE id = ? AND status IN ({marks})",
            (record.status, record.model_dump_json(), record.id, *expect),
        )
        return changed > 0

    async def active_batches(self) -> list[str]:
        marks = ", ".join("?" * len(_ACTIVE))
        rows = await self._fetch(
            f"SELECT id FROM batches WHERE status IN ({marks}) ORDER BY created_at, id",
            _ACTIVE,
        )
        return [row[0] for row in rows]

    # --- leases -------------------------------------------------------------------------
    async def claim_chunk(
        self, batch_id: str, chunks: int, holder: str, now: float, lease_s: float
    ) -> int | None:
        """A chunk has a row from its first claim on, so the next never-claimed one is
        one past the highest row."""
        async with self._write() as db:
            if await _ended(db, batch_id):
                return None
            rows = await db.execute_fetchall(
                "SELECT chunk FROM chunks WHERE batch_id = ? AND finished = 0 AND expires <= ?"
                " ORDER BY expires, chunk LIMIT 1",
                (batch_id, now),
            )
            if rows:
                chunk: int = next(iter(rows))[0]
                await db.execute(
                    "UPDATE chunks SET holder = ?, expires = ? WHERE batch_id = ? AND chunk = ?",
                    (holder, now + lease_s, batch_id, chunk),
                )
                return chunk
            rows = await db.execute_fetchall(
                "SELECT coalesce(max(chunk) + 1, 0) FROM chunks WHERE batch_id = ?", (batch_id,)
            )
            chunk = next(iter(rows))[0]
            if chunk >= chunks:
                return None
            await db.execute(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, 0)",
                (batch_id, chunk, holder, now + lease_s),
            )
            return chunk

    async def renew_chunk(
        self, batch_id: str, chunk: int, holder: str, now: float, lease_s: float
    ) -> bool:
        """A lease that ran out is still renewed while nobody else has claimed the chunk."""
        changed = await self._change(
            "UPDATE chunks SET expires = ? WHERE batch_id = ? AND chunk = ? AND holder = ?"
            " AND finished = 0",
            (now + lease_s, batch_id, chunk, holder),
        )
        return changed > 0

    async def finish_chunk(self, batch_id: str, chunk: int, holder: str) -> None:
        """Whoever says so: "finished" means every line is recorded, which is true whoever
        recorded them. A chunk never claimed is left as it is (nothing of it ran)."""
        await self._change(
            "UPDATE chunks SET finished = 1, holder = NULL WHERE batch_id = ? AND chunk = ?",
            (batch_id, chunk),
        )

    async def chunks_finished(self, batch_id: str) -> int:
        rows = await self._fetch(
            "SELECT count(*) FROM chunks WHERE batch_id = ? AND finished = 1", (batch_id,)
        )
        return int(rows[0][0])

    async def acquire(self, name: str, holder: str, now: float, lease_s: float) -> bool:
        # One statement: taken when absent, else renewed only if held or run out.
        changed = await self._change(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET holder = excluded.holder, expires = excluded.expires"
            " WHERE leases.holder = excluded.holder OR leases.expires <= ?",
            (name, holder, now + lease_s, now),
        )
        return changed > 0

    async def release(self, name: str, holder: str) -> None:
        await self._change("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    # --- line results -------------------------------------------------------------------
    async def record_line(self, batch_id: str, result: LineResult) -> bool:
        # One statement, so one round trip to the writer thread: the trigger `count_lines`
        # counts the line in the same statement's transaction. DO NOTHING on either unique
        # key (line, custom_id): the first write wins, and a refused line counts nothing.
        # Nothing either once the batch has ended: its line state is dropped, and a late
        # line (a runner whose lease ran out) would otherwise be kept for ever.
        marks = ", ".join("?" * len(_ACTIVE))
        changed = await self._change(
            "INSERT INTO lines SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM batches"
            f" WHERE id = ? AND status NOT IN ({marks})) ON CONFLICT DO NOTHING",
            (
                batch_id,
                result.line,
                result.custom_id,
                int(result.ok),
                result.data,
                batch_id,
                *_ACTIVE,
            ),
        )
        return changed > 0

    async def recorded_lines(self, batch_id: str, start: int, stop: int) -> set[int]:
        rows = await self._fetch(
            "SELECT line FROM lines WHERE batch_id = ? AND line >= ? AND line < ?",
            (batch_id, start, stop),
        )
        return {row[0] for row in rows}

    async def line_counts(self, batch_id: str) -> tuple[int, int]:
        rows = await self._fetch(
            "SELECT completed, failed FROM line_counts WHERE batch_id = ?", (batch_id,)
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def line_results(self, batch_id: str, start: int, stop: int) -> list[LineResult]:
        rows = await self._fetch(
            "SELECT line, custom_id, ok, data FROM lines"
            " WHERE batch_id = ? AND line >= ? AND line < ? ORDER BY line",
            (batch_id, start, stop),
        )
        return [LineResult(row[0], row[1], bool(row[2]), bytes(row[3])) for row in rows]

    async def drop_batch_lines(self, batch_id: str) -> None:
        async with self._write() as db:
            for table in ("lines", "chunks", "line_counts"):
                await db.execute(f"DELETE FROM {table} WHERE batch_id = ?", (batch_id,))


async def _ended(db: aiosqlite.Connection, batch_id: str) -> bool:
    """Whether the batch has a record and it has ended: its chunks are no longer claimed
    (its line state was dropped, so every chunk would look never claimed)."""
    rows = list(await db.execute_fetchall("SELECT status FROM batches WHERE id = ?", (batch_id,)))
    return bool(rows) and rows[0][0] not in ACTIVE


async def _set_up(db: aiosqlite.Connection) -> None:
    """WAL and the schema; idempotent, so every start runs it."""
    await _wal(db)
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("PRAGMA foreign_keys = OFF")
    rows = await db.execute_fetchall("PRAGMA user_version")
    version = next(iter(rows))[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database's schema is version {version}, newer than this Turnout's"
            f" ({SCHEMA_VERSION}): upgrade Turnout"
        )
    # IMMEDIATE: worker processes (`--workers`) open the database at once; a deferred
    # transaction that has read the schema cannot take the write lock after another
    # process's commit (SQLITE_BUSY at once, without the busy wait).
    await db.executescript(
        f"BEGIN IMMEDIATE; {SCHEMA} {RESPONSES_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; "
        "COMMIT;"
    )


async def _wal(db: aiosqlite.Connection, tries: int = 50) -> None:
    """Switch a database to WAL. Worker processes (`--workers`) may create it at once, and
    SQLite answers the loser "database is locked" at once, without its busy wait, so the
    switch is retried here (0.1 s apart, up to 5 s)."""
    for attempt in range(tries):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.1)
