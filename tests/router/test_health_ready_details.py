"""`/health/ready` without a key says whether the gateway serves and what failed to start,
by name; why it failed (which can name an internal address or a local path) is for admin
keys, or for anyone in open mode."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.router.test_reload import wait_for
from tests.turnout_server import RunningTurnout, simple_config

ADMIN, MEMBER = "tk-admin-ready-1", "tk-member-ready-2"


def dead_redis_config(keys: list[dict[str, Any]]) -> dict[str, Any]:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return simple_config(
        {"up": "http://127.0.0.1:9/v1"},
        keys=keys,
        state={"redis_url": f"redis://127.0.0.1:{port}/0"},
        storage={"single_replica": True},
    )


@pytest.fixture(scope="module")
def keyed() -> Iterator[RunningTurnout]:
    server = RunningTurnout(
        dead_redis_config([{"key": ADMIN, "admin": True}, {"key": MEMBER}])
    ).start(ready=False)
    yield server
    server.stop()


def ready_body(server: RunningTurnout, key: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with server.http() as http:

        def failed() -> httpx.Response | None:
            answer = http.get("/health/ready", headers=headers)
            return answer if answer.json()["status"] == "failed" else None

        answer = wait_for(failed)  # the store's ping runs after the server listens
    assert answer.status_code == 503
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("key", [None, MEMBER, "not-a-key"], ids=["none", "member", "wrong"])
def test_the_public_sees_what_failed_but_not_why(keyed: RunningTurnout, key: str | None) -> None:
    body = ready_body(keyed, key)
    assert body == {"status": "failed", "providers": 1, "not_ready": ["state store"]}


def test_an_admin_sees_why(keyed: RunningTurnout) -> None:
    body = ready_body(keyed, ADMIN)
    assert body["not_ready"] == ["state store"]
    assert body["error"].startswith("state store (redis://127.0.0.1:")


def test_open_mode_shows_why_to_anyone() -> None:
    server = RunningTurnout(dead_redis_config([])).start(ready=False)
    try:
        assert "redis://127.0.0.1:" in ready_body(server)["error"]
    finally:
        server.stop()
