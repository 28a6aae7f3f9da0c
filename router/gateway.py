"""Everything one running app holds: config, providers, dispatcher, accepted keys.

Built by `create_app` and kept in `app.state`; nothing here is module-global.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from time import time

import structlog

from policies.config import TurnoutConfig
from policies.dispatch import Dispatcher
from policies.plan import Planner
from providers.base import Provider
from providers.registry import build_provider

log = structlog.get_logger("turnout.gateway")


@dataclass(slots=True)
class Gateway:
    config: TurnoutConfig
    providers: dict[str, Provider]
    dispatcher: Dispatcher
    planner: Planner
    key_digests: frozenset[bytes]
    created: int = field(default_factory=lambda: int(time()))
    ready: bool = False
    _id_prefix: str = field(default_factory=lambda: secrets.token_hex(6))
    _id_counter: Iterator[int] = field(default_factory=itertools.count)

    def new_request_id(self) -> str:
        """Unique across processes (random prefix per app) without a syscall per request."""
        return f"req_{self._id_prefix}{next(self._id_counter):010x}"

    @classmethod
    def from_config(cls, config: TurnoutConfig) -> Gateway:
        providers = {
            name: build_provider(name, settings, config.timeouts)
            for name, settings in config.providers.items()
        }
        digests = frozenset(digest(k.key) for k in config.keys)
        return cls(config, providers, Dispatcher(providers), Planner(config), digests)

    @property
    def open_access(self) -> bool:
        return not self.key_digests

    async def start(self) -> None:
        for name, provider in self.providers.items():
            log.info("provider_starting", provider=name)
            await provider.start()
        self.ready = True
        log.info("gateway_ready", providers=len(self.providers), models=len(self.config.models))

    async def aclose(self) -> None:
        self.ready = False
        await asyncio.gather(*(p.aclose() for p in self.providers.values()))


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
