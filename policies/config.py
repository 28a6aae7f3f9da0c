"""The router config: one YAML file, validated once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.affinity.settings import AffinitySettings
from policies.model_names import ModelNames, name_problems
from policies.policy_config import (
    BreakerSettings,
    CacheSettings,
    EmulationSettings,
    HedgeSettings,
    LimitSettings,
    ModelLimitSettings,
    Price,
    StateSettings,
    Strategy,
    TeamSettings,
    check_key,
    configured_digest,
)
from policies.status_settings import StatusPageSettings
from policies.storage.settings import BatchSettings, ResponsesSettings, StorageSettings
from policies.telemetry.settings import TelemetrySettings
from policies.translation import Mode
from providers.capabilities import CapabilityOverrides
from providers.emulation.fim import FimSetting
from providers.local.tokenizer_cache import TokenizerName
from providers.registry import ProviderSettings
from providers.timeouts import TimeoutOverrides, UpstreamTimeouts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Larger bodies get 413")
    # A client may not hold a connection by trickling its body: past this it gets 408.
    body_timeout: float = Field(30.0, gt=0, description="Seconds to receive a whole body")
    # A connection must send each request's headers within this many seconds of opening,
    # or of its previous response's end, else it is closed: a socket that sends nothing,
    # or trickles its headers, cannot be held (read at start-up; router/server.py).
    header_timeout: float = Field(10.0, gt=0, le=3600, description="Seconds to receive headers")
    # Past this, new requests get 503 at once instead of waiting in a queue (read at
    # start-up; a reload does not change it). See router/connection_guard.py.
    max_connections: int = Field(4096, ge=1, description="Requests served at once")
    # One client credential (the Authorization header) may hold at most this many of those
    # at once, so a single key cannot take every slot from the other tenants (read at
    # start-up). Absent: half of max_connections. Requests without a credential (open
    # mode) are not counted here.
    max_connections_per_key: int | None = Field(None, ge=1)
    # A response the client does not accept bytes of for this long is cut (a stalled
    # reader would otherwise hold its slot and its upstream stream for ever); read per request.
    send_timeout: float = Field(60.0, gt=0, description="Seconds one response write may wait")
    # An upload (POST /v1/files) gets `body_timeout` plus one second per this many bytes
    # received, so a large file may take its time while a trickle is still cut (408).
    upload_min_rate: int = Field(65536, ge=1024, description="Bytes a second, on average")
    # HTTP versions granian accepts from clients: 1 (HTTP/1.1 only), 2 (cleartext HTTP/2
    # with prior knowledge only) or auto (either). HTTP/2 multiplexes a client's streams on
    # one connection (one descriptor per connection, not per stream), but granian starts
    # `header_timeout` only in HTTP/1-only mode: with 2 or auto, a socket that sends no
    # byte is held until the client closes it (README, "Security"). uvicorn: 1 only.
    http: Literal[1, 2, "auto"] = 1
    # Worker processes behind the one port, each with its own event loop and providers
    # (`auto`: the CPU count); `turnout serve --workers N` overrides it. Above 1, limits and
    # breakers must be shared through `state` (Redis) or `state.per_worker` set.
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1

    # Read once, when the server starts: a reload that changes them is logged as needing a
    # restart (router/reload.py); every other server setting applies to the next request.
    RESTART_ONLY: ClassVar[tuple[str, ...]] = (
        "host",
        "port",
        "max_connections",
        "max_connections_per_key",
        "header_timeout",
        "http",
        "workers",
    )

    @property
    def per_key_connections(self) -> int:
        if self.max_connections_per_key is not None:
            return min(self.max_connections_per_key, self.max_connections)
        return max(1, self.max_connections // 2)


class MetricsSettings(_Strict):
    # The series name every team's models and deployments: where keys are configured,
    # `GET /metrics` wants an admin key unless the operator makes it public.
    public: bool = False


class TimeoutSettings(UpstreamTimeouts):
    total: float = Field(600.0, gt=0, description="One deadline per client request, all attempts")


class ModelTimeouts(_Strict):
    """`timeouts:` on a model: each key given replaces, for this model's deployments, the
    one they would use otherwise (their provider's `timeouts`, else the top level's);
    `total` is the deadline of a request for this model, all its attempts together."""

    connect: float | None = Field(None, gt=0)
    first_byte: float | None = Field(None, gt=0)
    stream_idle: float | None = Field(None, gt=0)
    total: float | None = Field(None, gt=0)

    def upstream(self) -> TimeoutOverrides | None:
        """What the model's calls carry to their adapters (None: nothing of their own)."""
        if self.connect is None and self.first_byte is None and self.stream_idle is None:
            return None
        return TimeoutOverrides(self.connect, self.first_byte, self.stream_idle)


class RetrySettings(_Strict):
    attempts: int = Field(3, ge=1, le=10, description="Tries per deployment, the first included")
    backoff_initial: float = Field(0.2, ge=0)
    backoff_max: float = Field(8.0, ge=0)
    max_retry_after: float = Field(
        30.0, ge=0, description="A longer Retry-After moves on to the next deployment instead"
    )


class Deployment(_Strict):
    provider: str
    model: str
    capabilities: CapabilityOverrides | None = None
    # Fill-in-the-middle template that emulates `suffix`: a preset (starcoder, codellama,
    # deepseek, qwen, codestral) or a template with {prompt} and {suffix}.
    fim: FimSetting | None = None
    # The model's tokenizer (a packaged model name, a tokenizer directory or a .gguf):
    # chat template for a completion-only backend, token counts, token ids and logit_bias.
    tokenizer: TokenizerName | None = None
    weight: float = Field(1.0, gt=0, description="For the `weighted` strategy")
    price: Price | None = None  # for the `cost` strategy

    @cached_property
    def label(self) -> str:
        """`provider/model`, the deployment's name in headers, metrics and the state store;
        kept once made (a request asks for it a dozen times; the model is frozen)."""
        return f"{self.provider}/{self.model}"


NameOrPattern = Annotated[str, Field(min_length=1)]


class ModelRoute(_Strict):
    deployments: list[Deployment] = Field(min_length=1)
    # Other names a client may ask for this model by: exact `aliases`, then glob `match`
    # patterns (policies/model_names.py says the order); no name is listed by two models.
    aliases: list[NameOrPattern] = Field(default_factory=list)
    match: list[NameOrPattern] = Field(default_factory=list)
    display_name: str | None = None  # Anthropic's models list; default: the model's name
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    owned_by: str = "turnout"
    translation: Mode = Mode.EMULATE
    strategy: Strategy = Strategy.PRIORITY
    affinity: AffinitySettings | None = None  # `strategy: affinity`'s settings; default: defaults
    breaker: BreakerSettings | None = None  # this model's deployments; default: top-level
    timeouts: ModelTimeouts | None = None  # this model's deployments, key by key over the rest
    hedge: HedgeSettings | None = None  # key by key over the top level's
    limits: ModelLimitSettings | None = None  # budgets over every caller's requests


class KeySettings(_Strict):
    """A key outside any team: `admin` keys may also call the admin endpoints."""

    key: str = Field(min_length=1)  # the key, or `sha256:<hex digest>`
    name: str | None = None
    admin: bool = False
    limits: LimitSettings | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return check_key(key)


class TurnoutConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelRoute] = Field(default_factory=dict)
    keys: list[KeySettings] = Field(default_factory=list)
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    hedge: HedgeSettings = Field(default_factory=HedgeSettings)
    cache: CacheSettings | None = None  # absent: no response cache
    state: StateSettings = Field(default_factory=StateSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    emulation: EmulationSettings = Field(default_factory=EmulationSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    # OpenTelemetry traces (policies/telemetry/): off unless an OTLP endpoint is set.
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    # Prices by the model name a backend is called with, over the table shipped with
    # Turnout (policies/pricing/table.py); a deployment's own `price` is over both.
    prices: dict[str, Price] = Field(default_factory=dict)
    # The operator's status page and its JSON (router/status/); `false`: off.
    status_page: StatusPageSettings = Field(default_factory=StatusPageSettings)

    def total_for(self, model: str) -> float:
        """The deadline of a request for `model`: its own `timeouts.total`, else the top level's."""
        route = self.models.get(model)
        own = route.timeouts.total if route is not None and route.timeouts is not None else None
        return own if own is not None else self.timeouts.total

    @cached_property
    def model_names(self) -> ModelNames:
        """What each client model name means (built once per config)."""
        return ModelNames(self.models)

    @property
    def longest_total(self) -> float:
        """The longest deadline a request can have (to wait for in-flight ones to end)."""
        return max([self.timeouts.total, *(self.total_for(name) for name in self.models)])

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        problems: list[str] = []
        problems.extend(self._team_problems())
        problems.extend(name_problems(self.models))
        for name, route in self.models.items():
            for i, deployment in enumerate(route.deployments):
                if deployment.provider not in self.providers:
                    problems.append(
                        f"models.{name}.deployments[{i}].provider: unknown provider "
                        f"{deployment.provider!r} (defined: {_names(self.providers)})"
                    )
            for key in ("fallbacks", "context_window_fallbacks"):
                for j, target in enumerate(getattr(route, key)):
                    if target not in self.models:
                        problems.append(
                            f"models.{name}.{key}[{j}]: unknown model {target!r} "
                            f"(defined: {_names(self.models)})"
                        )
        problems.extend(self._storage_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _storage_problems(self) -> list[str]:
        """A shared Redis means several replicas: files kept on one replica's disk would be
        missing on the others (and a batch's output lost with its replica), so that
        combination is refused here, at start-up and on every reload alike."""
        storage = self.storage
        if self.state.shared and storage.s3 is None and not storage.single_replica:
            return [
                "storage: with a shared Redis (state.redis_url or state.redis_cluster_nodes) "
                "set, several replicas share batches, so file "
                "bytes must be in a bucket every replica reads (storage.s3); a deployment of "
                "one replica says so with storage.single_replica: true"
            ]
        return []

    def _team_problems(self) -> list[str]:
        problems: list[str] = []
        labels = {d.label for r in self.models.values() for d in r.deployments}
        for team_name, team in self.teams.items():
            where = f"teams.{team_name}"
            for j, model in enumerate(team.models or ()):
                if model not in self.models:
                    problems.append(
                        f"{where}.models[{j}]: unknown model {model!r} "
                        f"(defined: {_names(self.models)})"
                    )
            for j, rule in enumerate(team.rules):
                use = rule.use
                if use.model is not None and use.model not in self.models:
                    problems.append(f"{where}.rules[{j}].use.model: unknown model {use.model!r}")
                for k, name in enumerate(use.deployments or ()):
                    if name not in self.providers and name not in labels:
                        problems.append(
                            f"{where}.rules[{j}].use.deployments[{k}]: {name!r} is neither a "
                            "provider nor a deployment label (provider/model)"
                        )
        # By digest: a key and its `sha256:` form (in either case) are the same key.
        seen: dict[bytes, str] = {}
        owners = [(f"keys[{i}]", k.key) for i, k in enumerate(self.keys)] + [
            (f"teams.{t}.keys[{i}]", key)
            for t, team in self.teams.items()
            for i, key in enumerate(team.keys)
        ]
        for owner, key in owners:
            found = configured_digest(key)
            if found in seen:
                problems.append(f"{owner}: the same key is already listed at {seen[found]}")
            seen.setdefault(found, owner)
        return problems


def _names(mapping: Mapping[str, object]) -> str:
    return ", ".join(sorted(mapping)) or "none"
