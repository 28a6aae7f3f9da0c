"""Stored responses in SQLite: the `ResponseStore` half of `SqliteMeta`, a mixin of its own
so that the files-and-batches module stays one concept.

One row per response, the whole record as JSON (a long conversation's turn can be a few
MB: SQLite keeps it in overflow pages, well under its 1 GB limit on a value). `owner` and
the times are columns too, so the sweeper finds expired rows through an index without
reading their JSON. The table is created by `SqliteMeta.open` with the rest of the schema
(`CREATE ... IF NOT EXISTS`): a database made before stored responses existed gains it on
its next open, and its schema version stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from policies.storage.group_commit import GroupCommit
from policies.storage.response_store import ResponseRecord

PUT = "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS responses_by_expiry ON responses (expires_at)
  WHERE expires_at IS NOT NULL;
"""


class _Statements(Protocol):
    """What the mixin uses of `SqliteMeta`: its locked statement runners."""

    async def _fetch(self, sql: str, params: Iterable[Any]) -> list[Any]: ...

    async def _change(self, sql: str, params: Iterable[Any]) -> int: ...

    @property
    def _responses(self) -> GroupCommit: ...


class SqliteResponses:
    """`ResponseStore` over `SqliteMeta`'s connection (mixed into `SqliteMeta`)."""

    async def put_response(self: _Statements, record: ResponseRecord) -> None:
        """Written with whatever other responses are being stored at the same moment, in one
        transaction (policies/storage/group_commit.py); returns once it is committed."""
        row = (record.id, record.owner, record.created_at, record.expires_at)
        await self._responses.write((*row, record.model_dump_json()))

    async def get_response(
        self: _Statements, response_id: str, now: float
    ) -> ResponseRecord | None:
        """A row past `expires_at` but not yet swept is missing already."""
        rows = await self._fetch(
            "SELECT json FROM responses WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (response_id, now),
        )
        return ResponseRecord.model_validate_json(rows[0][0]) if rows else None

    async def delete_response(self: _Statements, response_id: str) -> bool:
        return await self._change("DELETE FROM responses WHERE id = ?", (response_id,)) > 0

    async def expired_responses(self: _Statements, now: float, limit: int) -> list[str]:
        rows = await self._fetch(
            "SELECT id FROM responses WHERE expires_at IS NOT NULL AND expires_at <= ?"
            " ORDER BY expires_at, id LIMIT ?",
            (now, limit),
        )
        return [row[0] for row in rows]
