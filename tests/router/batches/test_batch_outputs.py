"""Batches end to end through the official SDK, and what they write: a chat batch whose
lines run through Turnout's own pipeline (fallbacks, team policy) against fake upstreams on
loopback, embeddings and completions batches, and an upstream's error in the error file;
their output and error files, counts and timestamps.
"""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.router.batches.batch_helpers import (
    COMPLETIONS,
    EMBEDDINGS,
    FAST,
    KEY_A,
    StartTurnout,
    by_custom_id,
    finished,
    line,
    read_lines,
    start_batch,
    upstream_calls,
)
from tests.turnout_server import RunningTurnout, simple_config


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
