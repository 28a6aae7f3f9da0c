"""What one owner can make Turnout keep and run is bounded before it starts: the bytes
of its files (`storage.max_bytes_per_owner`) and its batches not yet ended
(`batches.max_active_per_owner`); another owner is not affected."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import openai
import pytest

from tests.fakes.behaviors import Ok
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEYS = {"a": "sk-quota-a", "b": "sk-quota-b"}
LINE = {
    "custom_id": "only",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
}


@pytest.fixture
def server() -> Iterator[RunningTurnout]:
    with FakeOpenAIUpstream() as up:
        up.set_default(Ok(delay=30.0))  # lines stay in flight: batches stay running
        config = simple_config(
            {"up": up.base_url},
            teams={name: {"keys": [key]} for name, key in KEYS.items()},
            storage={"max_bytes_per_owner": 2500},
            batches={"max_active_per_owner": 2, "poll_s": 0.1},
        )
        turnout = RunningTurnout(config).start()
        try:
            yield turnout
        finally:
            turnout.stop()


def _upload(client: openai.OpenAI, size: int) -> str:
    return client.files.create(file=("f.bin", io.BytesIO(b"x" * size)), purpose="user_data").id


def test_an_owner_cannot_store_past_its_quota(server: RunningTurnout) -> None:
    a, b = server.client(KEYS["a"]), server.client(KEYS["b"])
    first = _upload(a, 2000)
    with pytest.raises(openai.APIStatusError) as refused:
        _upload(a, 1000)  # 3000 > 2500: cut while it streams
    assert refused.value.status_code == 413
    assert refused.value.response.json()["error"]["code"] == "storage_quota_exceeded"
    assert [f.id for f in a.files.list()] == [first]  # nothing of the refused one kept

    _upload(b, 2000)  # another team's quota is its own
    a.files.delete(first)
    _upload(a, 2400)  # room again once a file is deleted


def test_an_owner_cannot_queue_more_batches_than_allowed(server: RunningTurnout) -> None:
    a, b = server.client(KEYS["a"]), server.client(KEYS["b"])
    data = json.dumps(LINE).encode()

    def create(client: openai.OpenAI) -> str:
        file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return batch.id

    running = [create(a), create(a)]
    with pytest.raises(openai.APIStatusError) as refused:
        create(a.with_options(max_retries=0))
    assert refused.value.status_code == 429
    assert refused.value.response.json()["error"]["code"] == "too_many_batches"

    create(b)  # another team may still queue its own
    a.batches.cancel(running[0])  # cancelling: no longer counted once it has ended
    deadline = time.monotonic() + 20
    while a.batches.retrieve(running[0]).status != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    create(a)
