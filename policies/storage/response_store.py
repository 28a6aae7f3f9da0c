"""Stored responses (the Responses API's conversation state), kept beside files and
batches in the same `MetaStore` (policies/storage/base.py): SQLite for one replica, Redis
for several, so that a `previous_response_id` is found whichever replica answered it and
after a restart. A response is written before its client gets the final answer, so a
follow-up never misses it; it expires after `responses.ttl`.

A record holds one turn: the input items of its request and the Response object (whose
`output` are the turn's output items), with the id of the turn before it, so a
conversation is rebuilt by walking back from its last response."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class ResponseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str  # "resp_..."
    owner: str  # as FileRecord.owner: another owner's response is a 404
    created_at: int
    expires_at: int | None = None
    previous_response_id: str | None = None
    input_items: list[dict[str, Any]]
    response: dict[str, Any]  # the Response object, as the client got it


class ResponseStore(Protocol):
    async def put_response(self, record: ResponseRecord) -> None:
        """Create or replace the record of response `record.id`."""
        ...

    async def get_response(self, response_id: str, now: float) -> ResponseRecord | None:
        """The record, unless missing or expired at `now`."""
        ...

    async def delete_response(self, response_id: str) -> bool:
        """Remove the record; False when there was none."""
        ...

    async def expired_responses(self, now: float, limit: int) -> list[str]:
        """Ids of records whose `expires_at` has passed, at most `limit` (for the sweeper;
        a store that expires records itself may return none)."""
        ...
