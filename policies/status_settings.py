"""The `status_page:` config section: the operator's status page (`GET /status`) and its
JSON (`GET /status.json`), see router/status/.

`status_page: false` turns both off (404); `true` or absent: on, with the defaults.
`session_secret` signs the login cookie; unset, each process draws a random one at start,
so a cookie made by one worker or replica is refused by the others (and by the same
process after a restart): with several workers or replicas, set it. It is a secret: the
redactor masks it in logs like a provider's key (policies/redaction.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

EIGHT_HOURS_S = 8 * 3600.0


class StatusPageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    session_secret: str | None = Field(None, min_length=16)
    session_ttl_s: float = Field(EIGHT_HOURS_S, gt=0, description="How long a login lasts")
    # Mark the cookie `Secure` whatever the scheme Turnout sees: behind a proxy that
    # terminates TLS, Turnout itself is reached over http (it reads no X-Forwarded-Proto).
    secure_cookie: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        """`status_page: false` / `true` stand for `{enabled: false}` / the defaults."""
        if isinstance(value, bool):
            return {"enabled": value}
        return {} if value is None else value
