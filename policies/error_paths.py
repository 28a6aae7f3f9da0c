"""Where a pydantic validation error points, in the user's own terms.

pydantic's error locations mix field names with union-member names ("str",
"constrained-str") and discriminator tags ("user", "openai"). Walking the validated data
along the location tells them apart: a part is a field or index only if the data there
has it. Used for request bodies (router) and config files (policies) alike."""

from __future__ import annotations

from typing import Any

from pydantic_core import ErrorDetails

_TAG_ERRORS = frozenset({"union_tag_invalid", "union_tag_not_found"})


def locate(error: ErrorDetails, data: Any) -> tuple[str, int]:
    """The error's path (`messages[0].content`, `providers.up.kind`) and how many of its
    parts exist in `data` (deeper = more specific, for choosing among union errors).
    A missing field's name is the one part the data cannot have."""
    path = ""
    depth = 0
    node = data
    loc = error["loc"]
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and -len(node) <= part < len(node):
            path, node, depth = f"{path}[{part}]", node[part], depth + 1
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            path, node, depth = join(path, part), node[part], depth + 1
        elif error["type"] == "missing" and i == len(loc) - 1:
            path, depth = join(path, str(part)), depth + 1
    if error["type"] in _TAG_ERRORS:
        discriminator = str((error.get("ctx") or {}).get("discriminator", "type")).strip("'")
        path = join(path, discriminator)
    return path, depth


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
