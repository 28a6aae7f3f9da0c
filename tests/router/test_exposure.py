"""The open-access guard holds for the life of the server, not only at start-up: a reload
that would leave a non-loopback listener without keys is refused (logged at error level)
and the running config keeps serving; `--allow-open` lets it through. Also: `serve --host`
takes a name, under granian too."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from policies.config import TurnoutConfig
from policies.loading import load_config
from router.app import create_app
from router.exposure import Listener, OpenAccessRefused, bind_address
from tests.router.test_metrics import parse, value
from tests.router.test_reload import ReloadingTurnout, wait_for, write
from tests.test_cli import COMMANDS, REPO, clean_env, free_port, serve_until_live, served

__all__ = ["served"]  # the fixture, imported for the tests below

ADMIN = "sk-admin-exposure"
KEYED: dict[str, Any] = {"providers": {}, "models": {}, "keys": [{"key": ADMIN, "admin": True}]}
KEYLESS: dict[str, Any] = {"providers": {}, "models": {}}
AUTH = {"authorization": f"Bearer {ADMIN}"}


def reloads(client: httpx.Client, result: str) -> float:
    samples = parse(client.get("/metrics", headers=AUTH).text)
    return value(samples, "turnout_config_reloads_total", result=result)


@pytest.mark.parametrize("server_name", ["granian", "uvicorn"])
def test_a_reload_may_not_open_a_public_listener(
    tmp_path: Path, served: list[subprocess.Popen[bytes]], server_name: str
) -> None:
    path, log = tmp_path / "turnout.yaml", tmp_path / "stderr.log"
    write(path, KEYED)
    port = free_port()
    with log.open("wb") as stderr:
        args = ["--config", str(path), "--host", "0.0.0.0", "--port", str(port)]
        proc = subprocess.Popen(
            [*COMMANDS["module"], "serve", *args, "--server", server_name],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=clean_env(),
            cwd=REPO,
        )
    served.append(proc)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        wait_for(lambda: _ready(client), timeout=30)
        assert client.get("/v1/models").status_code == 401

        write(path, KEYLESS)  # the operator deletes `keys:` and saves
        wait_for(lambda: reloads(client, "rejected") == 1)
        assert client.get("/v1/models").status_code == 401  # the running config stays
        assert client.get("/v1/models", headers=AUTH).status_code == 200
        assert reloads(client, "ok") == 0

        # A keyed config still reloads.
        write(path, {**KEYED, "keys": [*KEYED["keys"], {"key": "sk-second"}]})
        wait_for(lambda: reloads(client, "ok") == 1)
        assert client.get("/v1/models", headers={"authorization": "Bearer sk-second"}).is_success
    [rejected] = [e for e in _log_lines(log) if e.get("event") == "config_reload_rejected"]
    assert rejected["level"] == "error"
    assert "refusing to serve 0.0.0.0: no keys are configured" in rejected["error"]


def test_allow_open_lets_a_keyless_reload_through(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    for allow_open, applied in ((False, False), (True, True)):
        write(path, KEYED)
        server = PublicTurnout(path, Listener("0.0.0.0", allow_open=allow_open))
        server.start()
        try:
            write(path, KEYLESS)  # the file watcher may reload first: the outcome is the same
            assert server.reload() is applied
            status = server.http().get("/v1/models").status_code
            assert status == (200 if applied else 401)
        finally:
            server.stop()


def test_a_keyless_config_is_refused_when_the_app_is_built() -> None:
    """The server's worker loads the file again: it is checked there as well."""
    with pytest.raises(OpenAccessRefused, match=r"refusing to serve 0\.0\.0\.0"):
        create_app(TurnoutConfig(), listener=Listener("0.0.0.0"))
    create_app(TurnoutConfig(), listener=Listener("0.0.0.0", allow_open=True))
    create_app(TurnoutConfig(), listener=Listener("127.0.0.1"))


@pytest.mark.parametrize("server_name", ["granian", "uvicorn"])
def test_serve_binds_a_host_name(
    tmp_path: Path, served: list[subprocess.Popen[bytes]], server_name: str
) -> None:
    path = tmp_path / "turnout.yaml"
    write(path, KEYLESS)
    args = ["--config", str(path), "--host", "localhost", "--server", server_name]
    with serve_until_live(served, args, free_port()) as client:
        assert client.get("/v1/models").json() == {"object": "list", "data": []}


def test_bind_address_resolves_names_and_keeps_literals() -> None:
    assert bind_address("localhost", 80) == "127.0.0.1"
    assert bind_address("[::1]", 80) == "::1"
    assert bind_address("0.0.0.0", 80) == "0.0.0.0"


class PublicTurnout(ReloadingTurnout):
    """A reloading Turnout bound to every address (requests still go to 127.0.0.1), its
    app built for `listener`, as `turnout serve` builds it."""

    def __init__(self, path: Path, listener: Listener) -> None:
        super().__init__(path)
        self.app = create_app(load_config(path), config_path=path, listener=listener)
        self._server.config.app = self.app
        self._server.config.host = listener.host


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/health/ready").status_code == 200
    except httpx.TransportError:
        return False


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_bytes().splitlines():
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return lines
