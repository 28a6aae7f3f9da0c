"""Creating and finding batches through the official SDK: creation errors that name the
parameter, an input whose lines do not call the batch's endpoint, listing and paging, one
team's batches hidden from another, and the key every batch endpoint needs.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.batches.batch_helpers import (
    CHAT,
    EMBEDDINGS,
    FAST,
    KEY_A,
    KEY_B,
    StartTurnout,
    finished,
    line,
    upload,
    upstream_calls,
)
from tests.turnout_server import RunningTurnout, simple_config


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
