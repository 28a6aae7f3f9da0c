"""A reload that changes server settings read only at start-up (`host`, `port`,
`max_connections`, `max_connections_per_key`) says so at warning level, naming them, and
applies the rest; settings that apply to the next request (`body_timeout`,
`send_timeout`) reload silently."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.test_reload import (
    Logs,
    ReloadingTurnout,
    events,
    model_ids,
    wait_for,
    with_models,
    write,
)
from tests.router.test_reload import logs as logs
from tests.router.test_reload import (
    serve as serve,
)


def with_server(upstream: FakeOpenAIUpstream, *models: str, **server: Any) -> dict[str, Any]:
    return {**with_models(upstream, *models), "server": server}


def test_restart_only_server_settings_are_named_in_a_warning(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, with_server(upstream, "m", port=8000, max_connections=50, body_timeout=30))
    server = serve(path)

    write(path, with_server(upstream, "m", "m2", port=9000, max_connections=60, body_timeout=5))
    wait_for(lambda: "m2" in model_ids(server))  # the rest of the reload applies

    [warning] = wait_for(lambda: events(logs, "config_reload_needs_restart"))
    assert warning["log_level"] == "warning"
    assert warning["keys"] == ["server.port", "server.max_connections"]
    assert server.app.state.gateway.config.server.body_timeout == 5


def test_live_server_settings_reload_without_a_warning(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, with_server(upstream, "m", body_timeout=30))
    server = serve(path)

    write(path, with_server(upstream, "m", body_timeout=5, send_timeout=7))
    [reloaded] = wait_for(lambda: events(logs, "config_reloaded"))

    assert reloaded["sections_changed"] == ["server"]
    assert server.app.state.gateway.config.server.send_timeout == 7
    assert not events(logs, "config_reload_needs_restart")


def test_storage_changes_wait_for_a_restart(
    tmp_path: Path,
    upstream: FakeOpenAIUpstream,
    serve: Callable[[Path], ReloadingTurnout],
    logs: Logs,
) -> None:
    """Files and batches stay where they were opened: a reload that moves them says so."""
    path = tmp_path / "turnout.yaml"
    first = {**with_models(upstream, "m"), "storage": {"path": str(tmp_path / "one")}}
    write(path, first)
    server = serve(path)
    opened = server.app.state.storage

    moved = {**with_models(upstream, "m", "m2"), "storage": {"path": str(tmp_path / "two")}}
    moved["batches"] = {"max_in_flight": 4}
    write(path, moved)
    wait_for(lambda: "m2" in model_ids(server))

    [warning] = wait_for(lambda: events(logs, "config_reload_needs_restart"))
    assert warning["keys"] == ["storage", "batches.max_in_flight"]
    assert server.app.state.storage is opened
