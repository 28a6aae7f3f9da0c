"""Run a real Turnout (uvicorn, loopback, free port) inside the test process."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from policies.config import TurnoutConfig
from router.app import create_app


class RunningTurnout:
    def __init__(
        self,
        config: TurnoutConfig | dict[str, Any],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(config, dict):
            config = TurnoutConfig.model_validate(config)
        if "path" not in config.storage.model_fields_set:
            # Each app its own files and batches: one app's runner never takes another's.
            self._data = tempfile.TemporaryDirectory(prefix="turnout-data-")
            storage = config.storage.model_copy(update={"path": self._data.name})
            config = config.model_copy(update={"storage": storage})
        self.config = config
        self.app = create_app(config, clock=clock)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=0,
                loop="uvloop",
                http="httptools",
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.port = 0

    def start(self, *, ready: bool = True) -> RunningTurnout:
        """Once it listens; `ready`: and once /health/ready says so (providers started)."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("Turnout did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        if not ready:
            return self
        # Local models load after the server starts; converting a GGUF on a machine with an
        # empty model cache takes ~20 s, so readiness gets a deadline of its own.
        ready_by = time.monotonic() + 300
        while httpx.get(f"{self.url}/health/ready", timeout=5).status_code != 200:
            if time.monotonic() > ready_by:
                raise RuntimeError("Turnout did not become ready")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def async_client(self, api_key: str = "unused", **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 20)
        return httpx.Client(base_url=self.url, **kwargs)


def simple_config(
    upstreams: dict[str, str],
    models: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A config dict: each upstream name → an OpenAI provider at that base URL; `models`
    defaults to one model `m` served by every upstream in order. Timeouts are short so
    failure tests stay fast; breakers never open; override any top-level key with keyword
    arguments."""
    config: dict[str, Any] = {
        "providers": {name: {"kind": "openai", "base_url": url} for name, url in upstreams.items()},
        "models": models
        or {"m": {"deployments": [{"provider": n, "model": f"{n}-model"} for n in upstreams]}},
        "timeouts": {"connect": 2, "first_byte": 3, "stream_idle": 2, "total": 15},
        "retry": {"attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05},
        # Tests of retries and failover count every attempt; breakers have tests of their
        # own (tests/policies/test_breakers_e2e.py) and would otherwise carry one test's
        # failures into the next where a server is shared.
        "breaker": {"failures": 10_000},
    }
    config.update(overrides)
    return config


def policy_series(url: str) -> dict[str, float]:
    """Breaker transitions and attempt outcomes that Turnout at `url` counted so far, by
    sample."""
    text = httpx.get(f"{url}/metrics", timeout=20).text
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("turnout_breaker_transitions_total", "turnout_attempts_total")
    }
