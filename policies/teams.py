"""Who is calling: keys resolve to a caller — a team's key, a top-level key, or nobody
(open access, when no key is configured at all).

Keys are held only as SHA-256 digests (config may give the digest itself as
`sha256:<hex>`), so neither a lookup's timing nor a log line can leak one."""

from __future__ import annotations

from dataclasses import dataclass

from policies.config import TurnoutConfig
from policies.policy_config import LimitSettings, TeamSettings, configured_digest, digest
from policies.translation import Mode


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str  # the first 12 hex digits of the key's digest: names it in limits and logs
    name: str | None = None  # the key's configured name
    team: str | None = None
    admin: bool = False
    team_settings: TeamSettings | None = None
    key_limits: LimitSettings | None = None

    def may_use(self, model: str) -> bool:
        allowed = self.team_settings.models if self.team_settings is not None else None
        return allowed is None or model in allowed

    @property
    def translation(self) -> Mode | None:
        return self.team_settings.translation if self.team_settings is not None else None


ANONYMOUS = Caller(key_id="anonymous")


def key_id(key: str) -> str:
    """A configured key's id (the first 12 hex digits of its digest), as logs, limits and
    the status page name it: never the key."""
    return id_of(configured_digest(key))


def id_of(key_digest: bytes) -> str:
    return key_digest.hex()[:12]


class KeyTable:
    def __init__(self, config: TurnoutConfig) -> None:
        callers: dict[bytes, Caller] = {}
        for entry in config.keys:
            d = configured_digest(entry.key)
            callers[d] = Caller(
                key_id(entry.key), entry.name, None, entry.admin, None, entry.limits
            )
        for team_name, team in config.teams.items():
            for key in team.keys:
                d = configured_digest(key)
                callers[d] = Caller(id_of(d), None, team_name, False, team, team.key_limits)
        self._callers = callers
        self._by_id = {caller.key_id: caller for caller in callers.values()}

    @property
    def open_access(self) -> bool:
        return not self._callers

    def lookup(self, key: str) -> Caller | None:
        return self._callers.get(digest(key))

    def by_key_id(self, key_id: str) -> Caller | None:
        """The caller a key id names, as configured now (work queued by a key, a batch,
        runs as that key: with its team's rules and limits, or not at all once the key is
        gone). Open access: the anonymous caller."""
        if self.open_access:
            return ANONYMOUS if key_id == ANONYMOUS.key_id else None
        return self._by_id.get(key_id)
