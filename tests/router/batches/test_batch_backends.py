"""A batch runs wherever Turnout routes: here on Anthropic's Messages API, translated line
by line as a live chat completion is (the local samplers: tests/local_sampler/)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.turnout_server import RunningTurnout, simple_config


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


def test_a_chat_batch_runs_on_anthropic(
    turnout: Callable[[dict[str, Any]], RunningTurnout], claude: FakeAnthropicUpstream
) -> None:
    provider = {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-test"}
    server = turnout(
        simple_config(
            {},
            providers={"claude": provider},
            models={"c": {"deployments": [{"provider": "claude", "model": "claude-haiku"}]}},
            batches={"poll_s": 0.1},
        )
    )
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "c", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(3)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    with server.client() as client:
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 30
        while batch.status != "completed":
            assert batch.status in ("validating", "in_progress", "finalizing"), batch
            assert time.monotonic() < deadline
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        assert batch.output_file_id is not None
        output = client.files.content(batch.output_file_id).read().decode().splitlines()

    answers = {row["custom_id"]: row["response"] for row in map(json.loads, output)}
    assert sorted(answers) == ["q0", "q1", "q2"]
    for response in answers.values():
        assert response["status_code"] == 200
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["content"] == "Hello from Claude"
    assert len(claude.requests) == 3
