"""OpenAI's Batch API end to end through the official SDK: batches whose lines run through
Turnout's own pipeline (fallbacks, team policy, limits) against fake upstreams on
loopback; their output and error files, counts and lifecycle; creation errors; an input
that does not match the batch's endpoint; cancelling mid-batch; listing; isolation
between teams; metrics.

Every wait polls with a deadline; nothing asserts on how long anything took.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
import openai
import pytest
from openai.types import Batch
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

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


# ---- a chat batch through the whole pipeline ---------------------------------------------


@pytest.fixture
def policy_batch(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> RunningTurnout:
    """Model `flaky` fails over from `upstream` (always 503) to `upstream_b`; team a may
    use `m` and `flaky`, not `secret`."""
    upstream.set_default(Status(503))
    models = {
        "m": {"deployments": [{"provider": "b", "model": "b-model"}]},
        "flaky": {
            "deployments": [
                {"provider": "a", "model": "a-model"},
                {"provider": "b", "model": "b-model"},
            ]
        },
        "secret": {"deployments": [{"provider": "b", "model": "b-model"}]},
    }
    return turnout(
        simple_config(
            {"a": upstream.base_url, "b": upstream_b.base_url},
            models=models,
            teams={"a": {"keys": [KEY_A], "models": ["m", "flaky"]}},
            batches=FAST,
        )
    )


def test_a_chat_batch_fails_over_and_refuses_by_team_policy(
    policy_batch: RunningTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    client = policy_batch.client(KEY_A)
    lines = [
        line("plain"),
        line("fails-over", model="flaky"),
        line("refused", model="secret"),
        line("plain-too", max_tokens=5),
    ]

    created = start_batch(client, lines)
    batch = finished(client, created.id)

    assert created.status == "validating"
    assert batch.status == "completed"
    counts = batch.request_counts
    assert counts is not None
    assert (counts.total, counts.completed, counts.failed) == (4, 3, 1)
    assert batch.errors is None
    assert batch.created_at <= (batch.in_progress_at or 0) <= (batch.finalizing_at or 0)
    assert (batch.finalizing_at or 0) <= (batch.completed_at or 0)
    assert (batch.failed_at, batch.cancelled_at, batch.expired_at) == (None, None, None)

    output = read_lines(client, batch.output_file_id)
    assert [x["custom_id"] for x in output] == ["plain", "fails-over", "plain-too"]
    assert len({x["id"] for x in output}) == 3
    for item in output:
        assert item["response"]["status_code"] == 200
        assert item["response"]["body"]["object"] == "chat.completion"
        assert item["response"]["body"]["choices"][0]["message"]["content"] == (
            f"echo: {item['custom_id']}"
        )
    # The flaky model's first deployment answered 503 every time; the second answered.
    assert by_custom_id(output)["fails-over"]["response"]["body"]["model"] == "b-model"
    flaky_calls = upstream_calls(upstream)
    assert flaky_calls
    assert all(r.json["model"] == "a-model" for r in flaky_calls)

    errors = read_lines(client, batch.error_file_id)
    assert [x["custom_id"] for x in errors] == ["refused"]
    refused = errors[0]["response"]
    # As the live endpoint answers the same request of the same key.
    with pytest.raises(openai.APIStatusError) as live:
        client.chat.completions.create(model="secret", messages=[{"role": "user", "content": "x"}])
    assert refused["status_code"] == live.value.status_code in (403, 404)
    assert refused["body"] == live.value.response.json()
    assert set(refused["body"]["error"]) == {"message", "type", "param", "code"}
    # A refused line never reached an upstream.
    assert all(r.json["messages"][0]["content"] != "refused" for r in upstream_calls(upstream_b))
    assert len(upstream_calls(upstream_b)) == 3

    for file_id in (batch.output_file_id, batch.error_file_id):
        assert file_id is not None
        assert client.files.retrieve(file_id).purpose == "batch_output"


def test_an_embeddings_batch(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(simple_config({"a": upstream.base_url}, batches=FAST))
    client = server.client()

    batch = finished(
        client, start_batch(client, [line(f"e{i}", EMBEDDINGS) for i in range(3)], EMBEDDINGS).id
    )

    assert batch.status == "completed"
    assert batch.endpoint == EMBEDDINGS
    assert batch.error_file_id is None
    output = read_lines(client, batch.output_file_id)
    assert [x["custom_id"] for x in output] == ["e0", "e1", "e2"]
    for item in output:
        body = item["response"]["body"]
        assert body["object"] == "list"
        assert body["data"][0]["object"] == "embedding"
        assert body["data"][0]["embedding"]
    assert sorted(r.json["input"] for r in upstream_calls(upstream)) == ["e0", "e1", "e2"]
    assert all(r.path == "/v1/embeddings" for r in upstream_calls(upstream))


def test_a_completions_batch(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(simple_config({"a": upstream.base_url}, batches=FAST))
    client = server.client()

    batch = finished(
        client,
        start_batch(client, [line(f"p{i}", COMPLETIONS) for i in range(3)], COMPLETIONS).id,
    )

    assert batch.status == "completed"
    output = read_lines(client, batch.output_file_id)
    assert [x["custom_id"] for x in output] == ["p0", "p1", "p2"]
    for item in output:
        assert item["response"]["body"]["object"] == "text_completion"
        assert item["response"]["body"]["choices"][0]["text"]
    assert all(r.path == "/v1/completions" for r in upstream_calls(upstream))
    assert len(upstream_calls(upstream)) == 3


def test_an_upstream_error_goes_to_the_error_file(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Status(400, message="bad prompt", param="messages"))
    server = turnout(
        simple_config({"a": upstream.base_url}, batches={**FAST, "max_in_flight_per_batch": 1})
    )
    client = server.client()

    batch = finished(client, start_batch(client, [line("bad"), line("good")]).id)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    (error,) = read_lines(client, batch.error_file_id)
    assert error["custom_id"] == "bad"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["message"] == "bad prompt"
    assert [x["custom_id"] for x in read_lines(client, batch.output_file_id)] == ["good"]


# ---- creating a batch --------------------------------------------------------------------


@pytest.fixture
def two_teams(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> RunningTurnout:
    return turnout(
        simple_config(
            {"a": upstream.base_url},
            teams={"a": {"keys": [KEY_A]}, "b": {"keys": [KEY_B]}},
            batches=FAST,
        )
    )


def test_batch_creation_errors_name_the_parameter(two_teams: RunningTurnout) -> None:
    client, other = two_teams.client(KEY_A), two_teams.client(KEY_B)
    good = upload(client, [line("1")])
    others = upload(other, [line("1")])
    not_batch = client.files.create(file=("x.txt", b"hello"), purpose="assistants").id
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"input_file_id": good, "endpoint": "/v1/images", "completion_window": "24h"},
            400,
            "endpoint",
        ),
        (
            {"input_file_id": good, "endpoint": CHAT, "completion_window": "48h"},
            400,
            "completion_window",
        ),
        (
            {"input_file_id": "file-nope", "endpoint": CHAT, "completion_window": "24h"},
            404,
            "input_file_id",
        ),
        (
            {"input_file_id": others, "endpoint": CHAT, "completion_window": "24h"},
            404,
            "input_file_id",
        ),
        (
            {"input_file_id": not_batch, "endpoint": CHAT, "completion_window": "24h"},
            400,
            "input_file_id",
        ),
    ]

    for params, status, param in cases:
        with pytest.raises(openai.APIStatusError) as refused:
            client.batches.create(**params)
        assert refused.value.status_code == status, params
        error = refused.value.response.json()["error"]
        assert error["param"] == param, params
        assert error["type"] == "invalid_request_error"

    assert client.batches.list().data == []


def test_lines_that_do_not_call_the_batch_endpoint_fail_it_with_their_line_numbers(
    two_teams: RunningTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = two_teams.client(KEY_A)
    file_id = upload(client, [line("1"), line("2"), line("3")])

    created = client.batches.create(
        input_file_id=file_id, endpoint=EMBEDDINGS, completion_window="24h"
    )
    batch = finished(client, created.id)

    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.completed_at is None
    assert batch.errors is not None
    assert batch.errors.data is not None
    assert [e.line for e in batch.errors.data] == [1, 2, 3]
    assert all(e.param == "url" and e.code for e in batch.errors.data)
    assert all(EMBEDDINGS in (e.message or "") for e in batch.errors.data)
    assert (batch.output_file_id, batch.error_file_id) == (None, None)
    assert upstream_calls(upstream) == []


def test_listing_pages_and_another_teams_batch_is_404(two_teams: RunningTurnout) -> None:
    client, other = two_teams.client(KEY_A), two_teams.client(KEY_B)
    file_id = upload(client, [line("1")])
    made = [
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h").id
        for _ in range(3)
    ]
    newest_first = [b.id for b in client.batches.list().data]

    first = client.batches.list(limit=2)
    rest = client.batches.list(limit=2, after=first.data[-1].id)

    assert sorted(newest_first) == sorted(made)
    assert [b.id for b in first.data] == newest_first[:2]
    assert first.has_more is True
    assert [b.id for b in rest.data] == newest_first[2:]
    assert rest.has_more is False
    assert [b.id for b in client.batches.list(limit=2)] == newest_first  # SDK paging
    assert other.batches.list().data == []
    for call in (other.batches.retrieve, other.batches.cancel):
        with pytest.raises(openai.NotFoundError) as hidden:
            call(made[0])
        assert hidden.value.response.json()["error"]["param"] == "batch_id"
    assert client.batches.retrieve(made[0]).status != "cancelling"


def test_batch_endpoints_need_a_key(two_teams: RunningTurnout) -> None:
    with two_teams.http() as http:
        answers = [
            http.get("/v1/batches"),
            http.get("/v1/batches/batch_x"),
            http.post("/v1/batches/batch_x/cancel"),
            http.post(
                "/v1/batches",
                json={"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"},
            ),
        ]

    assert [a.status_code for a in answers] == [401] * 4


# ---- cancelling ----------------------------------------------------------------------------


def test_cancel_mid_batch_keeps_finished_lines_and_calls_nothing_more(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Two lines at a time: the first two answer at once, the next two hang until the
    batch is cancelled; no other line is ever sent."""
    upstream.enqueue(Ok(), Ok())
    upstream.set_default(Ok(delay=300))
    server = turnout(
        simple_config(
            {"a": upstream.base_url},
            timeouts={"connect": 2, "first_byte": 300, "total": 600},
            batches={**FAST, "max_in_flight_per_batch": 2},
        )
    )
    client = server.client()
    batch = start_batch(client, [line(f"r{i}") for i in range(10)])
    wait_until(
        client,
        batch.id,
        lambda b: b.request_counts is not None and b.request_counts.completed == 2,
        "finished two lines",
    )
    wait_for_calls(upstream, 4)  # lines 3 and 4 hang upstream

    cancelling = client.batches.cancel(batch.id)
    upstream.wait_for_client_closes(2, timeout=DEADLINE_S)  # cancelled, not left hanging
    cancelled = finished(client, batch.id)

    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert cancelled.completed_at is None
    assert (cancelled.cancelling_at or 0) <= cancelled.cancelled_at
    counts = cancelled.request_counts
    assert counts is not None
    assert (counts.total, counts.completed, counts.failed) == (10, 2, 0)
    output = read_lines(client, cancelled.output_file_id)
    assert sorted(x["custom_id"] for x in output) == ["r0", "r1"]
    assert cancelled.error_file_id is None
    assert len(upstream_calls(upstream)) == 4
    assert client.batches.cancel(batch.id).status == "cancelled"  # cancelling again: as is
    series = batch_series(server.url)
    assert series[("turnout_batches_total", "cancelling")] == 1
    assert series[("turnout_batches_total", "cancelled")] == 1
    assert series[("turnout_batch_lines_total", "ok")] == 2
    assert ("turnout_batch_lines_total", "error") not in series


def test_the_input_of_a_running_batch_cannot_be_deleted_until_it_ends(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Runners read the input chunk by chunk while the batch runs."""
    upstream.set_default(Ok(delay=300))
    server = turnout(
        simple_config(
            {"a": upstream.base_url},
            timeouts={"connect": 2, "first_byte": 300, "total": 600},
            batches={**FAST, "max_in_flight_per_batch": 1, "chunk_lines": 1},
        )
    )
    client = server.client()
    batch = start_batch(client, [line("r0"), line("r1")])
    wait_for_calls(upstream, 1)

    with pytest.raises(openai.ConflictError) as refused:
        client.files.delete(batch.input_file_id)
    client.batches.cancel(batch.id)
    finished(client, batch.id)

    assert refused.value.response.json()["error"]["param"] == "file_id"
    assert batch.id in refused.value.response.json()["error"]["message"]
    assert client.files.delete(batch.input_file_id).deleted is True


# ---- limits ----------------------------------------------------------------------------------


def test_a_rate_limited_teams_batch_waits_for_headroom_and_live_requests_pass(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """rpm 60 with a tenth for batches: six lines fit, the other four wait (the clock
    stands still) while a live request still gets in; once the minute has passed they
    run, and none failed."""
    clock = ManualClock()
    server = turnout(
        simple_config(
            {"a": upstream.base_url},
            teams={"a": {"keys": [KEY_A], "limits": {"rpm": 60}}},
            batches={**FAST, "limit_share": 0.1},
        ),
        clock,
    )
    client = server.client(KEY_A)
    batch = start_batch(client, [line(f"r{i}") for i in range(10)])
    held = wait_until(
        client,
        batch.id,
        lambda b: b.request_counts is not None and b.request_counts.completed == 6,
        "ran the lines that fit",
    )

    live = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "live"}])
    still = client.batches.retrieve(batch.id)
    clock.advance(60)
    done = finished(client, batch.id)

    assert held.status == "in_progress"
    assert live.choices[0].message.content == "echo: live"
    assert still.status == "in_progress"
    assert still.request_counts is not None
    assert still.request_counts.completed == 6
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (10, 0)
    assert done.error_file_id is None
    assert len(read_lines(client, done.output_file_id)) == 10
    assert len(upstream_calls(upstream)) == 11  # each line once, and the live request


# ---- metrics -----------------------------------------------------------------------------------


def test_batches_and_lines_are_counted_on_metrics(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Status(400))
    server = turnout(
        simple_config({"a": upstream.base_url}, batches={**FAST, "max_in_flight_per_batch": 1})
    )
    client = server.client()

    finished(client, start_batch(client, [line("bad"), line("ok1"), line("ok2")]).id)
    series = batch_series(server.url)

    assert series[("turnout_batches_total", "validating")] == 1
    assert series[("turnout_batches_total", "in_progress")] == 1
    assert series[("turnout_batches_total", "finalizing")] == 1
    assert series[("turnout_batches_total", "completed")] == 1
    assert series[("turnout_batch_lines_total", "ok")] == 2
    assert series[("turnout_batch_lines_total", "error")] == 1
