"""Per-call timeouts an HTTP adapter enforces (the total deadline is the dispatcher's)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class UpstreamTimeouts(BaseModel):
    """Seconds. `first_byte` bounds the wait for response headers (a whole non-streamed
    answer can take that long to start); `stream_idle` bounds every gap between reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(120.0, gt=0)
    stream_idle: float = Field(60.0, gt=0)


@dataclass(frozen=True, slots=True)
class TimeoutOverrides:
    """One call's own timeouts (a model's `timeouts:`): each one given replaces the one the
    provider was built with; those not given keep it."""

    connect: float | None = None
    first_byte: float | None = None
    stream_idle: float | None = None

    def applied_to(self, timeouts: UpstreamTimeouts) -> UpstreamTimeouts:
        given = {
            name: value
            for name in ("connect", "first_byte", "stream_idle")
            if (value := getattr(self, name)) is not None
        }
        return timeouts.model_copy(update=given) if given else timeouts
