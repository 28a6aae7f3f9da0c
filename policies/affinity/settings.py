"""The `affinity:` block of a model: where a conversation's identity comes from, how the
prompt is cut into blocks, how many blocks each deployment's record keeps, and how far a
deployment's load may exceed the pool's mean before affinity yields to it."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_SESSION_FROM = (
    "prompt_cache_key",
    "user",
    "metadata.session",
    "header:x-session-id",
    "header:x-claude-code-session-id",
)
# `prompt_cache_key`, `user`, `metadata.<field>` or `header:<name>` (an HTTP token).
_SOURCE = re.compile(
    r"prompt_cache_key|user|metadata\.[A-Za-z0-9_\-]+|header:[!#$%&'*+.^_`|~0-9A-Za-z\-]+"
)


class AffinitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_from: tuple[str, ...] = Field(
        DEFAULT_SESSION_FROM, description="Where a conversation's identity is read, in order"
    )
    block_chars: int = Field(64, ge=8, le=65_536, description="Characters per prefix block")
    max_blocks: int = Field(
        10_000, ge=1, le=10_000_000, description="Prefix blocks remembered per deployment"
    )
    max_load: float = Field(
        1.25,
        ge=1.0,
        description="No deployment is chosen above this times the pool's mean load, nor "
        "above this times its mean share of recent decisions",
    )
    held_headroom: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="How many times the load cap more a deployment holding the whole prompt "
        "may take before the prompt spills elsewhere (in proportion for part of it): a spill "
        "costs the held part's cold prefill there and, as the copy evicts a prompt of like "
        "size, that prompt's next cold prefill",
    )
    set_prompt_cache_key: bool = Field(
        False, description="Set `prompt_cache_key` for OpenAI deployments when the client did not"
    )
    session_ttl_s: float = Field(3600.0, gt=0, description="How long a session stays pinned")

    @field_validator("session_from")
    @classmethod
    def _sources(cls, sources: tuple[str, ...]) -> tuple[str, ...]:
        for source in sources:
            if not _SOURCE.fullmatch(source):
                raise ValueError(
                    f"`{source}`: a session source is `prompt_cache_key`, `user`, "
                    "`metadata.<field>` or `header:<name>`"
                )
        # Header names are case-insensitive: matched in lower case.
        return tuple(s.lower() if s.startswith("header:") else s for s in sources)
