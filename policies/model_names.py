"""Which configured model a client's model name means.

Clients send whatever names their release knows (`claude-opus-4-8`, dated variants,
helper-model names), so a model entry may answer to more than its own name:

1. its own name (the key under `models:`), exactly;
2. one of its `aliases:`, exactly;
3. one of its `match:` glob patterns (fnmatch syntax: `*`, `?`, `[seq]`, `[!seq]`;
   case-sensitive). Where several patterns match, the most specific wins: the one with
   the most literal (non-wildcard) characters, then the longer pattern, then the first
   in config order (models in file order, each model's patterns in list order).

Every place that turns a client's model name into a configured model asks `ModelNames`
(built once per config: `TurnoutConfig.model_names`), so routing, team lists, rules,
limits, metrics, fallbacks and `GET /v1/models/{id}` agree on what a name means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import NamedTuple, Protocol

from policies.errors import model_not_found


class NamedModel(Protocol):
    """What a model entry says about the names it answers to (config's `ModelRoute`)."""

    @property
    def aliases(self) -> Sequence[str]: ...

    @property
    def match(self) -> Sequence[str]: ...


class Resolved(NamedTuple):
    """The configured model a name resolved to, and how: `exact`, `alias` or
    `match:<pattern>`."""

    configured: str
    how: str


@dataclass(frozen=True, slots=True)
class _Pattern:
    pattern: str
    model: str
    regex: re.Pattern[str]

    @property
    def rank(self) -> tuple[int, int]:
        """Higher is more specific (config order breaks ties: the sort is stable)."""
        return literal_chars(self.pattern), len(self.pattern)


class ModelNames:
    """Resolves client model names against one config's models (see the module docstring)."""

    MAX_CACHED = 4096  # names are client-chosen: remember at most this many answers,
    MAX_CACHED_NAME = 256  # of names at most this long (a body's `model` may be megabytes)

    def __init__(self, models: Mapping[str, NamedModel]) -> None:
        self._exact = {name: Resolved(name, "exact") for name in models}
        self._aliases: dict[str, Resolved] = {}
        for name, route in models.items():
            for alias in route.aliases:
                self._aliases.setdefault(alias, Resolved(name, "alias"))
        patterns = [
            _Pattern(pattern, name, re.compile(translate(pattern)))
            for name, route in models.items()
            for pattern in route.match
        ]
        self._patterns = sorted(patterns, key=lambda p: p.rank, reverse=True)
        self._matched: dict[str, Resolved | None] = {}

    def resolve(self, name: str) -> Resolved | None:
        """The configured model `name` means, or None where no entry answers to it."""
        found = self._exact.get(name) or self._aliases.get(name)
        if found is not None or not self._patterns:
            return found
        if name in self._matched:
            return self._matched[name]
        found = next(
            (
                Resolved(p.model, f"match:{p.pattern}")
                for p in self._patterns
                if p.regex.match(name)
            ),
            None,
        )
        if len(self._matched) < self.MAX_CACHED and len(name) <= self.MAX_CACHED_NAME:
            self._matched[name] = found
        return found

    def require(self, name: str) -> Resolved:
        """As `resolve`, but an unknown name is the usual 404 `model_not_found`."""
        found = self.resolve(name)
        if found is None:
            raise model_not_found(name)
        return found


def literal_chars(pattern: str) -> int:
    """How many characters of `pattern` match only themselves: everything but `*`, `?`
    and bracketed sets (`[seq]` matches one character of many, so it counts as none)."""
    count, i = 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            end = _set_end(pattern, i)
            if end is not None:
                i = end + 1
                continue
        if char not in "*?":
            count += 1
        i += 1
    return count


def _set_end(pattern: str, start: int) -> int | None:
    """Where the set opened at `start` closes, as fnmatch reads it (a `]` right after `[`
    or `[!` is a member, not the end); None where it never closes (then `[` is literal)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "!":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    end = pattern.find("]", i)
    return end if end >= 0 else None


def name_problems(models: Mapping[str, NamedModel]) -> list[str]:
    """Config errors in the names models answer to: an alias that is another model's name
    or another model's alias, a pattern listed on two models (the second could never win)."""
    problems: list[str] = []
    aliases: dict[str, str] = {}
    patterns: dict[str, str] = {}
    for name, route in models.items():
        for j, alias in enumerate(route.aliases):
            where = f"models.{name}.aliases[{j}]"
            if alias in models and alias != name:
                problems.append(f"{where}: {alias!r} is the name of model {alias!r}")
            elif aliases.setdefault(alias, name) != name:
                problems.append(f"{where}: {alias!r} is already an alias of {aliases[alias]!r}")
        for j, pattern in enumerate(route.match):
            if patterns.setdefault(pattern, name) != name:
                problems.append(
                    f"models.{name}.match[{j}]: {pattern!r} is already a pattern of "
                    f"{patterns[pattern]!r}"
                )
    return problems
