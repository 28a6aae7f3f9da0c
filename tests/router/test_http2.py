"""`server.http` under granian: HTTP/1.1 only by default (a socket that sends nothing is
timed out only in that mode); `2` or `auto` let a client speak cleartext HTTP/2 with prior
knowledge, so its streams share one connection (one descriptor per connection, not per
stream); uvicorn speaks HTTP/1.1 only, and `turnout serve` says so instead of starting."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.served import SERVE, free_port, served_turnout
from tests.turnout_server import simple_config


def _command(config: dict[str, Any], tmp_path: Path, server: str) -> list[str]:
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    return [*SERVE, "--config", str(path), "--port", str(free_port()), "--server", server]


@contextmanager
def _serve(config: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`turnout serve` under granian, once /health/ready answers over HTTP/1.1 or HTTP/2."""
    http2 = config["server"].get("http") == 2
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, server="granian", http2=http2) as turnout:
        yield turnout.url


@contextmanager
def _sdk(url: str, *, http2: bool) -> Iterator[openai.OpenAI]:
    """The official SDK; `http2`: over HTTP/2 with prior knowledge (no HTTP/1.1 upgrade).
    Closed after use: granian's graceful stop waits for open HTTP/2 connections."""
    http_client = httpx2.Client(http1=not http2, http2=http2, timeout=10)
    with openai.OpenAI(
        base_url=f"{url}/v1", api_key="x", max_retries=0, http_client=http_client
    ) as client:
        yield client


def _answer_and_stream(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content == "echo: hello"
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
        )
        if chunk.choices
    ]
    assert "".join(pieces) == "echo: hello there"
    return raw.http_response.http_version


def test_http2_client_gets_answers_and_streams(
    upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    config = simple_config({"a": upstream.base_url}, server={"http": 2})
    with _serve(config, tmp_path) as url, _sdk(url, http2=True) as client:
        assert _answer_and_stream(client) == "HTTP/2"


def test_auto_accepts_http1_and_http2(upstream: FakeOpenAIUpstream, tmp_path: Path) -> None:
    config = simple_config({"a": upstream.base_url}, server={"http": "auto"})
    with _serve(config, tmp_path) as url:
        with _sdk(url, http2=True) as client:
            assert _answer_and_stream(client) == "HTTP/2"
        with _sdk(url, http2=False) as client:
            assert _answer_and_stream(client) == "HTTP/1.1"


def test_default_is_http1_only(upstream: FakeOpenAIUpstream, tmp_path: Path) -> None:
    """The default keeps granian's header timeout for sockets that send nothing, which
    its HTTP/2-capable modes lack: an HTTP/2 client is not served."""
    config = simple_config({"a": upstream.base_url}, server={})
    with _serve(config, tmp_path) as url:
        with _sdk(url, http2=True) as client, pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello"}]
            )
        with _sdk(url, http2=False) as client:
            assert _answer_and_stream(client) == "HTTP/1.1"


def test_uvicorn_refuses_http2(upstream: FakeOpenAIUpstream, tmp_path: Path) -> None:
    config = simple_config({"a": upstream.base_url}, server={"http": 2})
    command = _command(config, tmp_path, "uvicorn")
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "server.http: 2 needs --server granian" in done.stderr


def test_http_setting_is_validated() -> None:
    from policies.config import ServerSettings

    assert ServerSettings().http == 1
    with pytest.raises(ValueError, match="http"):
        ServerSettings.model_validate({"http": "h2"})


def test_http2_connection_that_stops_answering_is_closed(
    upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    """A client that sends the HTTP/2 preface and then nothing (no answer to pings) is
    closed, not held: granian pings it every `header_timeout` seconds."""
    config = simple_config({"a": upstream.base_url}, server={"http": 2, "header_timeout": 1})
    with _serve(config, tmp_path) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as silent:
            silent.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            silent.settimeout(30)  # generous: a bound, not a measurement
            while silent.recv(65536):  # the server's SETTINGS and PINGs, then its close
                pass
