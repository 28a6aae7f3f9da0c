"""A client's JSON key names reach a response header only encoded: a dropped unknown field
named with non-ASCII characters or CR/LF is answered (200, the name percent-encoded in
`x-turnout-dropped`), never a 500 or a dropped connection after the upstream was billed;
and the log line says the status the client really got. Under the in-process server and
under `turnout serve` with granian and with uvicorn."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.served import served_turnout
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
NAMES = ["ключ", "a\r\nb", "x: y"]


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


def config(claude: FakeAnthropicUpstream) -> dict[str, Any]:
    # Anthropic's adapter names the keys it can take: any other is dropped in drop mode.
    provider = {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-test"}
    models = {"c": {"deployments": [{"provider": "claude", "model": "claude-haiku"}]}}
    return simple_config({}, providers={"claude": provider}, models=models)


def ask(url: str, name: str) -> httpx.Response:
    body = {
        "model": "c",
        "messages": [{"role": "user", "content": "hi"}],
        name: 1,
        "router": {"translation": "drop"},
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=20)


@pytest.mark.parametrize("name", NAMES)
def test_a_dropped_key_is_named_encoded_in_the_header(
    turnout: StartTurnout, claude: FakeAnthropicUpstream, name: str
) -> None:
    reply = ask(turnout(config(claude)).url, name)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from Claude"
    dropped = reply.headers["x-turnout-dropped"]
    assert dropped.isascii()
    assert unquote(dropped) == name
    assert name not in claude.requests[0].json


def test_many_dropped_keys_are_counted_not_all_listed(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    body: dict[str, Any] = {
        "model": "c",
        "messages": [{"role": "user", "content": "hi"}],
        "router": {"translation": "drop"},
        **{f"поле{i}": i for i in range(40)},
    }
    server = turnout(config(claude))
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=20)
    assert reply.status_code == 200
    assert reply.headers["x-turnout-dropped"].endswith(", +24 more")


@pytest.fixture(params=["granian", "uvicorn"])
def served(
    request: pytest.FixtureRequest, claude: FakeAnthropicUpstream, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """`turnout serve` under each ASGI server: its URL and the file its log goes to."""
    log = tmp_path / "stderr.log"
    with served_turnout(
        tmp_path / "turnout.yaml", config(claude), server=request.param, log=log
    ) as turnout:
        yield turnout.url, log


def _logged_statuses(log: Path) -> list[int]:
    """The `status` of each request log line (JSON lines on stderr)."""
    statuses = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "request":
            statuses.append(entry["status"])
    return statuses


def test_under_each_asgi_server_the_client_gets_an_answer_and_the_log_agrees(
    served: tuple[str, Path], claude: FakeAnthropicUpstream
) -> None:
    url, log = served
    got = [ask(url, name) for name in NAMES]
    assert [r.status_code for r in got] == [200] * len(NAMES)
    assert [unquote(r.headers["x-turnout-dropped"]) for r in got] == NAMES
    deadline = time.monotonic() + 5
    while len(_logged_statuses(log)) < len(NAMES) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _logged_statuses(log) == [200] * len(NAMES)
