"""A conversation's identity, from the first of the model's `session_from` sources the
request carries. Only a hash of it leaves this module: a session id may be a credential
(a user id, a Claude Code session), so routing, the store and explain never see it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionKey:
    source: str  # e.g. `header:x-session-id`
    digest: str  # hex hash of team, source and value: what is pinned and shown

    @property
    def short(self) -> str:
        return self.digest[:12]


def session_key(
    sources: Sequence[str],
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    team: str | None,
) -> SessionKey | None:
    """The first source with a non-empty string value; None when the request has none."""
    for source in sources:
        value = _value(source, body, headers)
        if value:
            text = f"{team or ''}\x00{source}\x00{value}".encode()
            return SessionKey(source, hashlib.blake2b(text, digest_size=16).hexdigest())
    return None


def _value(source: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    if source.startswith("header:"):
        name = source[7:]
        value: Any = headers.get(name)
        if value is None:  # a plain dict from a caller that kept the client's spelling
            value = next((v for k, v in headers.items() if k.lower() == name), None)
    elif source.startswith("metadata."):
        metadata = body.get("metadata")
        value = metadata.get(source[9:]) if isinstance(metadata, Mapping) else None
    else:
        value = body.get(source)
    return value if isinstance(value, str) else None
