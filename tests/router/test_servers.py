"""The real `turnout serve` process under each supported ASGI server: answers, streams, and
cancels the upstream call when the client goes away (the in-process fixture runs uvicorn
only, so these pin the same behaviour under granian, the default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.served import served_turnout
from tests.turnout_server import simple_config


@pytest.fixture(params=["granian", "uvicorn"])
def served(
    request: pytest.FixtureRequest, upstream: FakeOpenAIUpstream, tmp_path: Path
) -> Iterator[str]:
    config = simple_config({"a": upstream.base_url})
    with served_turnout(tmp_path / "turnout.yaml", config, server=request.param) as turnout:
        yield turnout.url


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
