"""A running batch through the official SDK: cancelling it mid-way, its input held until it
ends, a rate-limited team's batch waiting for headroom while live requests pass, and the
batch and line counts on /metrics.

Every wait polls with a deadline; nothing asserts on how long anything took.
"""

from __future__ import annotations

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import ManualClock
from tests.router.batches.batch_helpers import (
    DEADLINE_S,
    FAST,
    KEY_A,
    StartTurnout,
    batch_series,
    finished,
    line,
    read_lines,
    start_batch,
    upstream_calls,
    wait_for_calls,
    wait_until,
)
from tests.turnout_server import simple_config

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
