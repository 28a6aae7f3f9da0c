"""The router config: one YAML file, validated once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.translation import Mode
from providers.capabilities import CapabilityOverrides
from providers.registry import ProviderSettings
from providers.timeouts import UpstreamTimeouts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Larger bodies get 413")


class TimeoutSettings(UpstreamTimeouts):
    total: float = Field(600.0, gt=0, description="One deadline per client request, all attempts")


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

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


class ModelRoute(_Strict):
    deployments: list[Deployment] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    owned_by: str = "turnout"
    translation: Mode = Mode.EMULATE


class KeySettings(_Strict):
    key: str = Field(min_length=1)
    name: str | None = None


class TurnoutConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelRoute] = Field(default_factory=dict)
    keys: list[KeySettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        problems: list[str] = []
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
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _names(mapping: Mapping[str, object]) -> str:
    return ", ".join(sorted(mapping)) or "none"
