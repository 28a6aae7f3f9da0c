"""Per-call timeouts an HTTP adapter enforces (the total deadline is the dispatcher's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class UpstreamTimeouts(BaseModel):
    """Seconds. `first_byte` bounds the wait for response headers (a whole non-streamed
    answer can take that long to start); `stream_idle` bounds every gap between reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(120.0, gt=0)
    stream_idle: float = Field(60.0, gt=0)
