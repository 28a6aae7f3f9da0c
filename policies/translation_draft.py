"""The planner's working state for one deployment: the body being rewritten, what was
emulated, dropped or clamped so far, and the caller's mode deciding each of those."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from providers.capabilities import Capabilities
from providers.emulation import Declared
from providers.types import Endpoint


class Mode(StrEnum):
    EMULATE = "emulate"
    STRICT = "strict"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Refusal:
    param: str
    message: str
    droppable: bool = True  # whether translation "drop" could get past it


@dataclass(slots=True)
class Draft:
    body: dict[str, Any]
    mode: Mode
    emulable: set[str]
    declared: Declared
    wants_usage: bool = False  # the client asked for the usage chunk
    emulated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)  # emulations for Turnout's own use

    def unsupported(self, param: str, what: str, droppable: bool = True) -> Refusal | None:
        """`param` is not native here: emulate, drop, or refuse, as the mode says. What
        cannot be dropped (the client is already owed a stream) is emulated when it can."""
        emulate = self.mode is Mode.EMULATE or (self.mode is Mode.DROP and not droppable)
        if emulate and param in self.emulable:
            self.emulated.append(param)
            return None
        if self.mode is Mode.DROP and droppable:
            self.body.pop(param, None)
            self.dropped.append(param)
            return None
        return Refusal(param, f"{what} is not supported by this deployment")

    def out_of_range(self, param: str, limit: float, what: str) -> Refusal | None:
        if self.mode is Mode.STRICT:
            return Refusal(param, f"{what} above {limit:g} is not supported by this deployment")
        self.body[param] = limit
        self.clamped.append(param)
        return None


Check = Callable[[Draft, Capabilities, Endpoint], Refusal | None]
