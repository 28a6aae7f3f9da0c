"""Config reload through a running Turnout: a changed file is served, a bad one is rejected
(and logged) while the old config keeps serving, a new provider that cannot start rejects
the reload, SIGHUP reaches the reloader (in-process and under both real servers), and a
request in flight finishes on the config it started with, its provider closed only after."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml

from policies.loading import load_config
from router.app import create_app
from router.reload import Reloader, install_sighup, remove_sighup
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.router.test_metrics import parse, value
from tests.served import served_turnout
from tests.turnout_server import RunningTurnout, simple_config

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
Logs = list[dict[str, Any]]


class ReloadingTurnout(RunningTurnout):
    """A RunningTurnout whose app was created from, and reloads, the file at `path`."""

    def __init__(self, path: Path) -> None:
        super().__init__(load_config(path))
        # The file's own config (storage in the test run's data directory): a reload
        # compares against it.
        self.app = create_app(load_config(path), config_path=path)
        self._server.config.app = self.app

    @property
    def reloader(self) -> Reloader:
        reloader: Reloader = self.app.state.reloader
        return reloader

    def reload(self, reason: str = "test") -> bool:
        """Run a reload on the server's loop, as the SIGHUP handler's trigger would."""
        work = asyncio.run_coroutine_threadsafe(self.reloader.reload(reason), self.reloader.loop)
        return work.result(timeout=60)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], ReloadingTurnout]]:
    running: list[ReloadingTurnout] = []

    def start(path: Path) -> ReloadingTurnout:
        server = ReloadingTurnout(path)
        running.append(server.start())
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def write(path: Path, config: dict[str, Any] | str) -> None:
    """Save as editors do: a new file renamed over the old one."""
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    draft = path.with_name(f".{path.name}.draft")
    draft.write_text(text)
    os.replace(draft, path)


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return result


def events(logs: Logs, name: str) -> Logs:
    return [entry for entry in list(logs) if entry["event"] == name]


def model_ids(server: RunningTurnout) -> set[str]:
    return {m.id for m in server.client().models.list()}


def with_models(up: FakeOpenAIUpstream, *names: str) -> dict[str, Any]:
    models = {n: {"deployments": [{"provider": "a", "model": f"{n}-upstream"}]} for n in names}
    return simple_config({"a": up.base_url}, models=models)


def test_changed_file_is_served(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, with_models(upstream, "m"))
    server = serve(path)
    client = server.client()
    client.chat.completions.create(model="m", messages=MESSAGES)
    provider = server.app.state.gateway.providers["a"]

    write(path, with_models(upstream, "m", "m2"))
    wait_for(lambda: "m2" in model_ids(server))
    reply = client.chat.completions.with_raw_response.create(model="m2", messages=MESSAGES)
    assert reply.headers["x-turnout-deployment"] == "a/m2-upstream"

    [reloaded] = events(logs, "config_reloaded")
    assert reloaded["trigger"] == "file_changed"
    assert reloaded["models_added"] == ["m2"]
    assert reloaded["models_removed"] == reloaded["providers_rebuilt"] == []
    assert reloaded["sections_changed"] == ["models"]
    assert server.app.state.gateway.providers["a"] is provider  # unchanged: reused, not rebuilt
    with server.http() as http:
        samples = parse(http.get("/metrics").text)
    # The metrics outlive the gateway they were counted on.
    labels = {"endpoint": "chat", "status": "200", "outcome": "ok"}
    assert value(samples, "turnout_requests_total", model="m", deployment="a/m-upstream", **labels)
    assert value(samples, "turnout_config_reloads_total", result="ok") == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("models: {m: [unclosed", "not valid YAML"),
        ({"models": {"m": {"deployments": [{"provider": "nope", "model": "x"}]}}}, "nope"),
        ({"providers": {"a": {"kind": "openai", "base_url": "x"}}, "modles": {}}, "modles"),
    ],
)
def test_bad_file_is_rejected_and_the_old_config_serves(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
    content: dict[str, Any] | str,
    reason: str,
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, with_models(upstream, "m"))
    server = serve(path)
    gateway = server.app.state.gateway

    write(path, content)
    [rejected] = wait_for(lambda: events(logs, "config_reload_rejected"))
    assert str(path) in rejected["error"]
    assert reason in rejected["error"]
    assert server.app.state.gateway is gateway
    reply = server.client().chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello"
    assert not events(logs, "config_reloaded")


def test_provider_that_cannot_start_rejects_the_reload(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    config = with_models(upstream, "m")
    write(path, config)
    server = serve(path)
    gateway = server.app.state.gateway

    broken = tmp_path / "broken-model"  # a model directory with no weights: loading fails
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["BertModel"]}')
    config["providers"]["local"] = {"kind": "torch", "model": str(broken), "device": "cpu"}
    config["models"]["emb"] = {"deployments": [{"provider": "local", "model": "broken"}]}
    write(path, config)
    assert server.reload() is False
    [rejected] = events(logs, "config_reload_rejected")
    assert "provider local" in rejected["error"]
    assert server.app.state.gateway is gateway
    assert model_ids(server) == {"m"}
    server.client().chat.completions.create(model="m", messages=MESSAGES)


def test_sighup_trigger_reloads(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, with_models(upstream, "m"))
    server = serve(path)
    assert server.reload("sighup") is True  # nothing changed: nothing rebuilt
    assert [e["trigger"] for e in events(logs, "config_unchanged")] == ["sighup"]

    write(path, with_models(upstream, "m", "m3"))
    server.reloader.loop.call_soon_threadsafe(server.reloader.trigger, "sighup")
    wait_for(lambda: "m3" in model_ids(server))
    # The watcher sees the same change; whichever comes second finds nothing to do.
    assert len(events(logs, "config_reloaded")) == 1
    triggers = {
        e["trigger"] for e in events(logs, "config_reloaded") + events(logs, "config_unchanged")
    }
    assert "sighup" in triggers


async def test_sighup_handler_calls_back_on_the_main_thread() -> None:
    loop = asyncio.get_running_loop()
    called = asyncio.Event()
    assert install_sighup(loop, called.set)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(called.wait(), timeout=5)
    finally:
        remove_sighup(loop)


def test_no_sighup_handler_off_the_main_thread() -> None:
    installed: list[bool] = []

    def elsewhere() -> None:
        loop = asyncio.new_event_loop()
        try:
            installed.append(install_sighup(loop, lambda: None))
        finally:
            loop.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert installed == [False]


def test_embedded_config_has_no_reloader(upstream: FakeOpenAIUpstream) -> None:
    server = RunningTurnout(with_models(upstream, "m")).start()
    try:
        assert "reloader" not in server.app.state
    finally:
        server.stop()


def test_in_flight_stream_finishes_on_the_old_config(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    before = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        models={
            "m": {"deployments": [{"provider": "a", "model": "a-model"}]},
            "k": {"deployments": [{"provider": "b", "model": "b-model"}]},
        },
    )
    write(path, before)
    server = serve(path)
    old = server.app.state.gateway
    closed: dict[str, list[float]] = {"a": [], "b": []}
    for name, times in closed.items():
        provider = old.providers[name]
        provider.aclose = _recording(provider.aclose, times)

    text = "one two three four five six seven eight"
    upstream.enqueue(Ok(text=text, chunk_delay=0.4))
    response = server.client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True
    )
    assert response.headers["x-turnout-deployment"] == "a/a-model"
    chunks = iter(response.parse())
    received = [next(chunks)]

    after = {**before, "providers": {"b": before["providers"]["b"]}}
    after["models"] = {"m": {"deployments": [{"provider": "b", "model": "b-model"}]}}
    write(path, after)
    assert server.reload() is True
    new = server.app.state.gateway
    assert new is not old
    assert new.providers["b"] is old.providers["b"]
    reply = server.client().chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert reply.headers["x-turnout-deployment"] == "b/b-model"
    assert closed["a"] == []  # its stream is still running on the old gateway

    last_content = 0.0
    for chunk in chunks:
        received.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            last_content = time.monotonic()
    streamed = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert streamed == text  # whole, from a, with no in-band error
    assert received[-1].choices[0].finish_reason == "stop"

    wait_for(lambda: closed["a"], timeout=5)
    assert closed["a"][0] > last_content
    [retired] = wait_for(lambda: events(logs, "gateway_retired"))
    assert retired["closed"] == ["a"]
    assert closed["b"] == []  # the new gateway still serves with it
    [reloaded] = events(logs, "config_reloaded")
    assert reloaded["providers_removed"] == ["a"]
    assert reloaded["models_removed"] == ["k"]
    assert reloaded["models_changed"] == ["m"]


def _recording(aclose: Callable[[], Any], times: list[float]) -> Callable[[], Any]:
    async def recorded() -> None:
        times.append(time.monotonic())
        await aclose()

    return recorded


@pytest.mark.parametrize("server_name", ["granian", "uvicorn"])
def test_real_server_reloads_on_sighup_and_on_change(
    tmp_path: Path, upstream: FakeOpenAIUpstream, server_name: str
) -> None:
    """Under granian the signal goes to its main process, which passes it to the worker
    (granian alone would respawn the worker); a reload counted by the worker's own
    metrics shows it was handled in place."""
    path = tmp_path / "turnout.yaml"
    write(path, with_models(upstream, "m"))
    with served_turnout(path, server=server_name) as turnout:

        def reloads(result: str) -> float:
            samples = parse(httpx.get(f"{turnout.url}/metrics", timeout=5).text)
            return value(samples, "turnout_config_reloads_total", result=result)

        turnout.process.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads("unchanged") == 1)
        assert turnout.process.poll() is None

        write(path, with_models(upstream, "m", "m2"))
        wait_for(lambda: reloads("ok") == 1)
        models = httpx.get(f"{turnout.url}/v1/models", timeout=5).json()["data"]
        assert {m["id"] for m in models} == {"m", "m2"}
