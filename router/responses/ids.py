"""Identifiers of Responses objects and items, in OpenAI's form (`resp_`, `msg_`, `fc_` + hex)."""

from __future__ import annotations

import secrets

# The prefix OpenAI gives each kind of item; unknown kinds get `item_`.
ITEM_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def new_item_id(item_type: str) -> str:
    return new_id(ITEM_PREFIXES.get(item_type, "item"))
