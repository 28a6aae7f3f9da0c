"""What the Batch API tests share: building and uploading input lines, starting a batch,
waiting for it (always with a deadline, never asserting on how long it took), reading its
output and error files, the calls that reached a fake upstream, and the batch series on
/metrics.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
import openai
from openai.types import Batch
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout

StartTurnout = Callable[..., RunningTurnout]
FINAL = ("completed", "failed", "cancelled", "expired")
DEADLINE_S = 30.0
FAST = {"poll_s": 0.1}
KEY_A, KEY_B = "sk-batch-team-a", "sk-batch-team-b"
CHAT: Final = "/v1/chat/completions"
EMBEDDINGS: Final = "/v1/embeddings"
COMPLETIONS: Final = "/v1/completions"


def line(custom_id: str, url: str = CHAT, **body: Any) -> dict[str, Any]:
    if url == CHAT:
        body = {"model": "m", "messages": [{"role": "user", "content": custom_id}], **body}
    elif url == EMBEDDINGS:
        body = {"model": "m", "input": custom_id, **body}
    else:
        body = {"model": "m", "prompt": custom_id, **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]], purpose: Any = "batch") -> str:
    data = "\n".join(json.dumps(x) for x in lines).encode()
    return client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose=purpose).id


def start_batch(client: openai.OpenAI, lines: list[dict[str, Any]], url: Any = CHAT) -> Batch:
    return client.batches.create(
        input_file_id=upload(client, lines), endpoint=url, completion_window="24h"
    )


def wait_until(
    client: openai.OpenAI, batch_id: str, done: Callable[[Batch], bool], what: str
) -> Batch:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch never {what}: {batch}")
        time.sleep(0.02)


def finished(client: openai.OpenAI, batch_id: str) -> Batch:
    return wait_until(client, batch_id, lambda b: b.status in FINAL, "finished")


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).read().decode()
    assert text.endswith("\n")
    out = [json.loads(x) for x in text.splitlines()]
    for item in out:
        assert set(item) == {"id", "custom_id", "response", "error"}
        assert item["id"].startswith("batch_req_")
        assert set(item["response"]) == {"status_code", "request_id", "body"}
        assert item["response"]["request_id"].startswith("req_")
        assert item["error"] is None
    return out


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {x["custom_id"]: x for x in lines}


def upstream_calls(upstream: FakeOpenAIUpstream) -> list[Any]:
    return [r for r in upstream.requests if r.method == "POST"]


def wait_for_calls(upstream: FakeOpenAIUpstream, count: int) -> None:
    """Until `count` calls (model lists and health checks aside) reached `upstream`."""
    deadline = time.monotonic() + DEADLINE_S
    while len(upstream_calls(upstream)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(upstream_calls(upstream))} calls, wanted {count}")
        time.sleep(0.01)


def batch_series(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{url}/metrics", timeout=20).text
    return {
        (sample.name, next(iter(sample.labels.values()), "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("turnout_batches_total", "turnout_batch_lines_total")
    }
