"""The policy sections of the router config: teams and their keys, limits and rules,
routing strategies, circuit breakers, the response cache and where shared state lives."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from math import inf
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.translation import Mode


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(StrEnum):
    PRIORITY = "priority"  # config order
    WEIGHTED = "weighted"  # random, in proportion to each deployment's `weight`
    LEAST_LATENCY = "least-latency"  # lowest EWMA latency, by power-of-two choices
    LEAST_BUSY = "least-busy"  # fewest calls in flight (local samplers: their queue)
    COST = "cost"  # cheapest `price` first
    AFFINITY = "affinity"  # where the prompt is cached, within bounded load (`affinity:`)


class Price(_Strict):
    """What a deployment's calls cost: USD per million tokens, and per call where a
    backend charges so. Requests are charged with it (policies/pricing/), and the `cost`
    strategy sorts by it. `cached_prompt`: prompt tokens read from the backend's prompt
    cache (default: `prompt`); `cache_write_prompt`: prompt tokens written to that cache,
    which Anthropic charges above `prompt` (default: `prompt`)."""

    # Finite only: an infinite price made every priced request fail (as a 500, after its
    # upstream call was billed) turning its cost into whole nano-dollars.
    prompt: float = Field(0.0, ge=0, allow_inf_nan=False)
    completion: float = Field(0.0, ge=0, allow_inf_nan=False)
    cached_prompt: float | None = Field(None, ge=0, allow_inf_nan=False)
    cache_write_prompt: float | None = Field(None, ge=0, allow_inf_nan=False)
    per_request: float = Field(0.0, ge=0, allow_inf_nan=False, description="USD per upstream call")


class EmulationSettings(_Strict):
    """How far Turnout's emulations that make several upstream calls for one request
    (`n` fanned out, `best_of` candidates, a batch of prompts as one chat each) may go."""

    max_parallel: int = Field(
        4, ge=1, le=128, description="Upstream calls one request has in flight at once"
    )
    max_calls: int = Field(
        128,
        ge=1,
        le=100_000,
        description="Upstream calls one request's emulations may make in all",
    )


class BudgetSettings(_Strict):
    per: Literal["hour", "day", "week", "month"]
    tokens: int = Field(ge=1)


NANOS_PER_USD = 1_000_000_000


class UsdBudgetSettings(_Strict):
    """Dollars a scope may spend per calendar period (UTC), counted in whole nano-dollars
    by the state stores: requests are admitted on their estimated cost and settled on
    their real cost (policies/limits.py). At most 9 million dollars a period, so a count
    stays exact in Redis's Lua numbers (doubles: integers up to 2**53)."""

    per: Literal["hour", "day", "week", "month"]
    usd: float = Field(gt=0, le=9_000_000, allow_inf_nan=False)

    @property
    def nanos(self) -> int:
        return round(self.usd * NANOS_PER_USD)


class LimitSettings(_Strict):
    rpm: int | None = Field(None, ge=1, description="Requests per minute")
    tpm: int | None = Field(None, ge=1, description="Tokens (prompt + completion) per minute")
    budget_tokens: BudgetSettings | None = None
    budget_usd: UsdBudgetSettings | None = None
    # Requests in flight at once (a stream until its last byte), counted from the headers.
    concurrency: int | None = Field(None, ge=1, description="Requests in flight at once")


class ModelLimitSettings(_Strict):
    """A model's own limits (`models.<m>.limits`), over every caller's requests routed to
    it: budgets only. A model is known once the body is parsed and routed, so its limits
    are taken with the estimate (`Limiter.admit_tokens`); request and concurrency limits
    are counted from the headers, before the body, and stay the callers'."""

    budget_tokens: BudgetSettings | None = None
    budget_usd: UsdBudgetSettings | None = None


_SHA256 = re.compile(r"^sha256:[0-9a-fA-F]{64}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def configured_digest(key: str) -> bytes:
    """The digest a config entry stands for: given as `sha256:<hex>`, or computed."""
    if key.startswith("sha256:"):
        return bytes.fromhex(key.removeprefix("sha256:"))
    return digest(key)


def check_key(key: str) -> str:
    if key.startswith("sha256:") and not _SHA256.match(key):
        raise ValueError("a hashed key is `sha256:` followed by 64 hex digits")
    return key


class RuleMatch(_Strict):
    """What a rule looks at: only what the client controls. Every given condition must hold."""

    metadata: dict[str, str] | None = None  # request `metadata` tags, all equal
    user: list[str] | None = None  # request `user` is one of these
    model: list[str] | None = None  # requested model is one of these
    header: dict[str, str] | None = None  # request header (case-insensitive name) equals
    stream: bool | None = None
    has_tools: bool | None = None
    prompt_tokens_over: int | None = Field(None, ge=0)  # estimated prompt tokens above this

    @field_validator("user", "model", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class RuleAction(_Strict):
    """What a matching rule does: serve another model, narrow its deployments, reorder."""

    model: str | None = None
    deployments: list[str] | None = None  # provider names or `provider/model` labels
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _does_something(self) -> Self:
        if self.model is None and self.deployments is None and self.strategy is None:
            raise ValueError("a rule's `use` needs at least one of model, deployments, strategy")
        return self


class Rule(_Strict):
    name: str | None = None
    when: RuleMatch
    use: RuleAction


class TeamSettings(_Strict):
    keys: list[str] = Field(default_factory=list)
    models: list[str] | None = None  # allowed model names; None: every model
    limits: LimitSettings | None = None  # the whole team's
    key_limits: LimitSettings | None = None  # each of the team's keys
    translation: Mode | None = None
    rules: list[Rule] = Field(default_factory=list)
    allow_router_options: bool = True  # may requests narrow/reorder with `router: {...}`

    @field_validator("keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        return [check_key(k) for k in keys]


class BreakerSettings(_Strict):
    failures: int = Field(3, ge=1, description="Consecutive failures that open the breaker")
    cooldown: float = Field(5.0, gt=0, description="Seconds open before one probe")
    failure_rate: float | None = Field(None, gt=0, le=1)
    window: float = Field(30.0, gt=0, description="Seconds of history for failure_rate")
    min_calls: int = Field(10, ge=1, description="Calls in the window before the rate counts")


class HedgeSettings(_Strict):
    """`hedge:` at the top level (every model) or on a model (its keys replace the top
    level's). A stream whose first content has not come `after` seconds after a deployment
    was called gets the plan's next eligible deployment called too; the first to produce
    content is relayed, the other is cancelled. `after: auto` (the default): `factor` times
    the deployment's p95 time to first token, within [`floor`, `cap`] (`cap` while it has
    no statistics); `after: null`, `hedge: false` or `max: 0`: no hedging."""

    after: float | Literal["auto"] | None = "auto"
    max: int = Field(1, ge=0, le=8, description="Hedges one request may start")
    factor: float = Field(3.0, gt=0, allow_inf_nan=False)
    floor: float = Field(2.0, ge=0, allow_inf_nan=False)
    cap: float = Field(30.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        """`hedge: false` turns hedging off, `hedge: true` is the default."""
        if value is False:
            return {"after": None}
        return {} if value is True else value

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: object) -> object:
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < inf:
            raise ValueError("must be a number of seconds above 0, `auto`, or null (no hedging)")
        return value

    @model_validator(mode="after")
    def _floor_within_cap(self) -> Self:
        if self.floor > self.cap:
            raise ValueError(f"floor ({self.floor}) is above cap ({self.cap})")
        return self

    @property
    def enabled(self) -> bool:
        return self.after is not None and self.max > 0

    def over(self, base: HedgeSettings) -> HedgeSettings:
        """These settings on a model, over `base` (the top level's): the keys given here win."""
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})

    def delay(self, p95_first_token: float | None) -> float:
        """Seconds to wait for a deployment's first content before hedging; `p95_first_token`:
        its p95 time to first token, None when unknown. Only for enabled settings."""
        if isinstance(self.after, float | int):
            return float(self.after)
        if p95_first_token is None:
            return self.cap
        return min(self.cap, max(self.floor, self.factor * p95_first_token))


class CacheSettings(_Strict):
    ttl: float = Field(gt=0, description="Seconds a cached response is served")
    # A request's own `cache.ttl` is capped here: a client cannot keep an answer (and fill
    # the store) for longer than the operator allows. Absent: `ttl`.
    ttl_max: float | None = Field(None, gt=0, allow_inf_nan=False)
    share_across_teams: bool = False
    max_entries: int = Field(10_000, ge=1, description="In-memory store only")

    @model_validator(mode="after")
    def _ttl_within_max(self) -> Self:
        if self.ttl_max is not None and self.ttl_max < self.ttl:
            raise ValueError(f"ttl_max ({self.ttl_max}) is below ttl ({self.ttl})")
        return self

    @property
    def longest_ttl(self) -> float:
        return self.ttl if self.ttl_max is None else self.ttl_max


class StateSettings(_Strict):
    redis_url: str | None = None  # absent: in memory, one process
    # No braces: a key's hash tag (`{team:…}`, `{deployment:…}`) is what keeps a script's
    # keys in one Redis Cluster slot, and a tag in the prefix would come first and win.
    prefix: str = Field("turnout:", pattern=r"^[^{}]*$")
    timeout: float = Field(
        0.5, gt=0, description="Seconds Redis has to accept a connection, and to answer"
    )
    # While Redis is unreachable everything else fails open; limits cannot be checked:
    # `allow` admits unchecked (and logs), `refuse` answers 503 `state_unavailable`.
    limits_when_unavailable: Literal["allow", "refuse"] = "allow"
    # Redis Cluster: `cluster: true` with `redis_url` naming any node (or a
    # `redis+cluster://` URL, which implies it), or `redis_cluster_nodes` listing the
    # startup nodes (`host:port` or `redis://…` each) instead of `redis_url`.
    cluster: bool = False
    redis_cluster_nodes: list[str] | None = Field(None, min_length=1)
    # With `server.workers` above 1 and no Redis, limits, breakers and statistics would be
    # each worker's own: start-up refuses unless this says that is what the operator wants.
    per_worker: bool = False

    @model_validator(mode="after")
    def _one_redis_address(self) -> Self:
        if self.redis_url is not None and self.redis_cluster_nodes is not None:
            raise ValueError(
                "state: redis_url and redis_cluster_nodes are exclusive (give a cluster's "
                "startup nodes in one of them)"
            )
        if self.cluster and self.redis_url is None and self.redis_cluster_nodes is None:
            raise ValueError(
                "state.cluster: true needs the cluster's address: redis_url (any node) or "
                "redis_cluster_nodes"
            )
        return self

    @property
    def shared(self) -> bool:
        """A Redis (one node or a cluster) is configured: replicas share this state."""
        return self.redis_url is not None or self.redis_cluster_nodes is not None
