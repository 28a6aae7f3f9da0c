"""The real `turnout serve` process under each supported ASGI server: answers, streams, and
cancels the upstream call when the client goes away (the in-process fixture runs uvicorn
only, so these pin the same behaviour under granian, the default)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.turnout_server import simple_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["granian", "uvicorn"])
def served(
    request: pytest.FixtureRequest, upstream: FakeOpenAIUpstream, tmp_path: Path
) -> Iterator[str]:
    config = tmp_path / "turnout.yaml"
    config.write_text(yaml.safe_dump(simple_config({"a": upstream.base_url})))
    port = _free_port()
    command = [sys.executable, "-m", "router", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--server", request.param],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
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


def test_answers_and_streams(served: str) -> None:
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "echo: hello"
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello there"}], stream=True
        )
        if chunk.choices
    ]
    assert "".join(pieces) == "echo: hello there"


def test_disconnect_cancels_the_upstream_call(served: str, upstream: FakeOpenAIUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    upstream.enqueue(Ok(delay=5))
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{served}/v1/chat/completions", json=body, timeout=0.5)
    assert len(upstream.wait_for_client_closes(1, timeout=3)) == 1

    upstream.enqueue(Ok(chunk_delay=0.3, text="one two three four five six seven eight"))
    with httpx.stream(
        "POST", f"{served}/v1/chat/completions", json={**body, "stream": True}, timeout=5
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")
    assert len(upstream.wait_for_client_closes(2, timeout=3)) == 2
