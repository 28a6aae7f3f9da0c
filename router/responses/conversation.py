"""A conversation's state for the Responses door: the earlier items a
`previous_response_id` stands for, and each new turn stored for the next.

The chain is walked back from the response named, one stored turn at a time (its input
items, then its output items), to the first; every turn must be the caller's (another
owner's id is a 404, as a missing one is). The walk is bounded by `responses.max_turns`
and `responses.max_items`: a longer conversation is a 400, not unbounded work.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from policies.errors import ApiError
from policies.storage.factory import Storage
from policies.storage.response_store import ResponseRecord
from policies.storage.settings import ResponsesSettings


async def earlier_items(
    storage: Storage, owner: str, response_id: str | None, settings: ResponsesSettings
) -> list[dict[str, Any]]:
    """The items of every turn up to and including `response_id`, oldest first."""
    turns: list[ResponseRecord] = []
    items = 0
    next_id = response_id
    while next_id is not None:
        record = await storage.meta.get_response(next_id, time.time())
        if record is None or record.owner != owner:
            if not turns:
                raise ApiError(
                    f"Previous response with id '{next_id}' not found.",
                    status=404,
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            break  # an earlier turn expired or was deleted: the conversation starts here
        turns.append(record)
        items += len(record.input_items) + len(record.response.get("output") or ())
        if len(turns) > settings.max_turns or items > settings.max_items:
            raise ApiError(
                f"The conversation before '{response_id}' is longer than this server "
                f"continues ({settings.max_turns} responses, {settings.max_items} items); "
                "start a new one or send the items you need as `input`.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        next_id = record.previous_response_id
    history: list[dict[str, Any]] = []
    for record in reversed(turns):
        history += record.input_items
        if record.response.get("status") != "failed":  # a failed turn's output is partial
            history += [dict(item) for item in record.response.get("output") or ()]
    return history


async def store_turn(
    storage: Storage,
    owner: str,
    response: Mapping[str, Any],
    input_items: list[dict[str, Any]],
    settings: ResponsesSettings,
) -> None:
    """Keep one turn (before its client gets it: a follow-up always finds it)."""
    created = int(response.get("created_at") or time.time())
    await storage.meta.put_response(
        ResponseRecord(
            id=str(response["id"]),
            owner=owner,
            created_at=created,
            expires_at=created + settings.ttl,
            previous_response_id=response.get("previous_response_id"),
            input_items=input_items,
            response=dict(response),
        )
    )
