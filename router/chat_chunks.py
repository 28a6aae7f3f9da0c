"""Reading a chat stream's tool-call fragments, for the doors that turn a chat stream into
another API's events (router/responses/events.py, router/messages/events.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def tool_call_key(
    call: Mapping[str, Any], open_key: int | None, open_id: str | None, known: Iterable[int]
) -> int:
    """Which tool call a fragment belongs to: chat's `index`; a backend that leaves it out
    continues the open call (`open_key`, whose id is `open_id`), unless the fragment carries
    another call's id; else a new call after the `known` ones."""
    index = call.get("index")
    if isinstance(index, int):
        return index
    other_id = call.get("id") and (open_key is None or call["id"] != open_id)
    if open_key is not None and not other_id:
        return open_key
    return max(known, default=-1) + 1
