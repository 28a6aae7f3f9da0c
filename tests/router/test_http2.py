"""`server.http` under granian: HTTP/1.1 only by default (a socket that sends nothing is
timed out only in that mode); `2` or `auto` let a client speak cleartext HTTP/2 with prior
knowledge, so its streams share one connection (one descriptor per connection, not per
stream); uvicorn speaks HTTP/1.1 only, and `turnout serve` says so instead of starting."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import simple_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(config: dict[str, Any], tmp_path: Path, server: str) -> tuple[list[str], str]:
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    port = _free_port()
    command = [sys.executable, "-m", "router", "serve", "--config", str(path)]
    return [*command, "--port", str(port), "--server", server], f"http://127.0.0.1:{port}"


@contextmanager
def _serve(config: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`turnout serve` under granian, once /health/ready answers over HTTP/1.1 or HTTP/2."""
    command, url = _command(config, tmp_path, "granian")
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    http2 = config["server"].get("http") == 2
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(http1=not http2, http2=http2, timeout=1) as probe:
            while True:
                try:
                    if probe.get(f"{url}/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, "turnout serve exited"
                assert time.monotonic() < deadline, "turnout serve did not become ready"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


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
    command, _ = _command(config, tmp_path, "uvicorn")
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
