"""The names of `RedisStore`'s keys, and the hash tags that keep each script in one slot.

On Redis Cluster a script may only touch keys of one hash slot, and a key's slot is that of
its hash tag, the text between its first `{` and the next `}`. So:

- a limit's counter is tagged by its scope, the owner it limits (`rpm:team:research` and
  `budget:team:research:day` both under `{team:research}`; a key's under `{key:<id>}`), so
  one owner's limits share a slot. One request's limits have several owners (its key, its
  team), which no tag can honestly join (a team's limit is every key's): `RedisStore`
  runs one script per slot (`redis_admission.py`);
- a breaker and its failure-rate window share `{deployment:<name>}`, and so does the
  deployment's list of recent calls (the status page's), so a script may touch all three;
- the latency and in-flight hashes, the response cache's entries: one key per script.

The names changed when the tags came (issue 13); limits, breakers and statistics left
under the old names simply expire, so nothing is migrated. The prefix stays outside the
tag: one cluster serves several prefixes, and tests in their own prefixes share slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.state.base import Limit, LimitKind


def scope_tag(key: str) -> str:
    """The owner in a limit's key (`<measure>:<kind>:<name>[:<period>]`, e.g.
    `tpm:key:abc` -> `key:abc`); a key of another shape is its own tag. Only which keys
    share a slot depends on it, never correctness: scripts are grouped by actual slot."""
    parts = key.split(":")
    if len(parts) < 3:
        return key
    return f"{parts[1]}:{parts[2]}"


@dataclass(frozen=True, slots=True)
class StateKeys:
    prefix: str = "turnout:"

    def limit(self, limit: Limit) -> str:
        tag = f"{self.prefix}{{{scope_tag(limit.key)}}}"
        if limit.kind is LimitKind.BUDGET:
            # One counter per period: a new period starts from nothing, the old one expires.
            return f"{tag}:budget:{limit.key}:{limit.period_end:.3f}"
        if limit.kind is LimitKind.CONCURRENCY:
            return f"{tag}:slots:{limit.key}"
        return f"{tag}:rate:{limit.key}"

    def breaker(self, deployment: str) -> str:
        return f"{self.prefix}{{deployment:{deployment}}}:breaker"

    def breaker_window(self, deployment: str) -> str:
        return f"{self.breaker(deployment)}:window"

    def recent_calls(self, deployment: str) -> str:
        return f"{self.prefix}{{deployment:{deployment}}}:calls"

    @property
    def latency(self) -> str:
        return f"{self.prefix}latency"

    @property
    def in_flight(self) -> str:
        return f"{self.prefix}in_flight"

    def cache(self, key: str) -> str:
        return f"{self.prefix}cache:{key}"

    def session(self, session: str) -> str:
        return f"{self.prefix}session:{session}"
