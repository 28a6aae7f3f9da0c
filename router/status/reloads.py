"""The last config reloads, for the status page: when, how each ended (accepted,
rejected, unchanged) and a rejection's reason. Kept by the app's `Reloader` (one per app,
in `app.state.reloader`): in memory, per process, the last `MAX_RELOADS` only."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

MAX_RELOADS = 20
MAX_REASON_CHARS = 500  # a rejection names the file and key path; a whole traceback is not needed

Outcome = Literal["accepted", "rejected", "unchanged"]


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    at: float  # wall-clock seconds
    outcome: Outcome
    trigger: str  # "sighup", "file_changed"
    reason: str | None = None  # why it was rejected, secrets masked

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "outcome": self.outcome,
            "trigger": self.trigger,
            "reason": self.reason,
        }


class ReloadLog:
    def __init__(self, size: int = MAX_RELOADS) -> None:
        self._events: deque[ReloadEvent] = deque(maxlen=size)

    def record(self, at: float, outcome: Outcome, trigger: str, reason: str | None = None) -> None:
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 1] + "\u2026"
        self._events.append(ReloadEvent(at, outcome, trigger, reason))

    def newest_first(self) -> list[ReloadEvent]:
        return list(reversed(self._events))
