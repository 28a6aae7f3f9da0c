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
    parts = _follow(error["loc"], 0, data, error["type"] == "missing")
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else join(path, part)
    if error["type"] in _TAG_ERRORS:
        discriminator = str((error.get("ctx") or {}).get("discriminator", "type")).strip("'")
        path = join(path, discriminator)
    return path, len(parts)


def _follow(loc: tuple[int | str, ...], i: int, node: Any, missing: bool) -> list[int | str]:
    """The longest reading of `loc[i:]` as keys and indexes of `node`. A tag can also be a
    key of the data (a text part's tag `text` and its field `text`): both readings are
    tried, and the one that goes deeper is the right one."""
    if i == len(loc):
        return []
    part = loc[i]
    if isinstance(part, int) and isinstance(node, list) and -len(node) <= part < len(node):
        return [part, *_follow(loc, i + 1, node[part], missing)]
    if isinstance(part, str) and isinstance(node, dict) and part in node:
        taken: list[int | str] = [part, *_follow(loc, i + 1, node[part], missing)]
        skipped = _follow(loc, i + 1, node, missing)
        return taken if len(taken) >= len(skipped) else skipped
    if missing and i == len(loc) - 1:
        return [str(part)]
    return _follow(loc, i + 1, node, missing)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
