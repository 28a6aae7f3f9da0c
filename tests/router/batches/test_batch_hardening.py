"""Files and batches against a hostile client and an unlucky deployment: what a client can
make Turnout keep or read without bound, a batch whose input goes missing, a late line
after its batch ended, a key that moves to another team mid-batch.

Every wait polls with a deadline; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from policies.storage.base import MetaStore
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.policies.storage.test_meta import a_batch, a_line
from tests.policies.storage.test_meta import meta as meta
from tests.policies.storage.test_meta import open_meta as open_meta
from tests.redis_cluster import redis_cluster as redis_cluster
from tests.redis_cluster import redis_cluster_url as redis_cluster_url
from tests.redis_server import redis_url as redis_url
from tests.router.batches.batch_helpers import (
    finished,
    line,
    read_lines,
    start_batch,
    upload,
    upstream_calls,
    wait_for_calls,
)
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
KEY, OTHER = "sk-hardening-a", "sk-hardening-b"
FAST = {"poll_s": 0.1}


# ---- what a client's words cost ------------------------------------------------------


def test_a_long_custom_id_is_quoted_briefly_in_the_upload_error(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"a": upstream.base_url}, batches=FAST))
    client = server.client()
    long_id = "x" * 100_000

    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, [line(long_id), line(long_id)])

    error = refused.value.response.json()["error"]
    assert error["code"] == "duplicate_custom_id"
    assert "line 2" in error["message"]
    assert len(error["message"]) < 1000


def test_a_batch_keeps_a_short_model_whatever_its_first_line_says(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """The Batch object (read by every runner's look and every listing) keeps no megabyte
    the client wrote."""
    server = turnout(simple_config({"a": upstream.base_url}, batches=FAST))
    client = server.client()
    huge_model = "m" * 1_000_000

    created = start_batch(client, [line("one", model=huge_model)])
    batch = finished(client, created.id)

    assert batch.model is not None
    assert huge_model.startswith(batch.model)
    assert len(batch.model) <= 256
    listed = server.http().get("/v1/batches")
    assert len(listed.content) < 10_000


def _chunked_upload(junk: bytes) -> Iterator[bytes]:
    boundary = b"hardening"
    yield b"--" + boundary + b"\r\n"
    yield b'Content-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
    yield b"--" + boundary + b"\r\n"
    yield b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nsmall\r\n'
    yield b"--" + boundary + b"\r\n"
    yield b'Content-Disposition: form-data; name="notes"\r\n\r\n'
    for start in range(0, len(junk), 8192):
        yield junk[start : start + 8192]
    yield b"\r\n--" + boundary + b"--\r\n"


def test_an_upload_body_is_bounded_whatever_part_holds_the_bytes(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Without a Content-Length, bytes of a part the parser drops still count: a client
    cannot keep an upload streaming for ever beside a small file."""
    server = turnout(
        simple_config({"a": upstream.base_url}, storage={"max_file_bytes": 1000}, batches=FAST)
    )
    headers = {"content-type": "multipart/form-data; boundary=hardening"}

    with server.http() as http:
        try:
            answer = http.post(
                "/v1/files", content=_chunked_upload(b"j" * 200_000), headers=headers
            )
        except httpx.TransportError:  # the server may close before the client sent it all
            answer = None
        listed = http.get("/v1/files").json()

    if answer is not None:
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "file_too_large"
    assert listed["data"] == []


# ---- a batch whose input goes missing ------------------------------------------------


def test_a_batch_whose_input_vanishes_is_cancelled_keeping_what_finished(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Deleted in a race with the batch's creation, or from the disk behind Turnout's back:
    the batch ends (cancelled, what finished kept) instead of running for ever."""
    upstream.set_default(Ok(delay=0.5))
    batches = {"poll_s": 0.1, "chunk_lines": 1, "max_in_flight_per_batch": 1}
    server = turnout(simple_config({"a": upstream.base_url}, batches=batches))
    client = server.client()
    created = start_batch(client, [line(f"l{n}") for n in range(6)])
    wait_for_calls(upstream, 1)

    assert server.config.storage.path is not None
    (Path(server.config.storage.path) / "files" / created.input_file_id).unlink()
    batch = finished(client, created.id)

    assert batch.status == "cancelled"
    assert batch.errors is not None
    assert batch.errors.data
    assert batch.errors.data[0].code == "input_file_missing"
    counts = batch.request_counts
    assert counts is not None
    assert counts.completed >= 1
    output = read_lines(client, batch.output_file_id)
    # Which line ran first is not fixed: two chunks are claimed at once (the next one's
    # line starts as the previous one's ends), and either may take the one slot first.
    done = [x["custom_id"] for x in output]
    assert len(done) == len(set(done)) == counts.completed
    assert set(done) <= {f"l{n}" for n in range(6)}


# ---- a line that comes late -----------------------------------------------------------


async def test_an_ended_batch_takes_no_late_line_nor_claim(meta: MetaStore) -> None:
    """A runner whose lease ran out may finish a line after another finalized the batch
    and dropped its line state: the line is not kept (for ever, as nothing drops it
    again), and no chunk of the batch is handed out again (every line would run twice)."""
    await meta.put_batch(a_batch("b", 1, status="in_progress"))
    assert await meta.claim_chunk("b", 1, "r1", 0.0, 10.0) == 0
    assert await meta.record_line("b", a_line(0, "a")) is True
    await meta.finish_chunk("b", 0, "r1")
    ended = a_batch("b", 1, status="completed")
    assert await meta.update_batch(ended, ["in_progress"])
    await meta.drop_batch_lines("b")

    assert await meta.record_line("b", a_line(0, "a", data=b"late")) is False
    assert await meta.recorded_lines("b", 0, 1) == set()
    assert await meta.line_counts("b") == (0, 0)
    assert await meta.claim_chunk("b", 1, "r2", 100.0, 10.0) is None


# ---- the creator's key moves to another team ------------------------------------------


def test_a_key_moved_to_another_team_stops_running_the_old_teams_batch(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    """The lines would spend team b's budgets for answers only team a can read."""
    upstream.set_default(Ok(delay=1.0))

    def config(team_of_key: str) -> dict[str, Any]:
        teams: dict[str, dict[str, list[str]]] = {"a": {"keys": [OTHER]}, "b": {"keys": []}}
        teams[team_of_key]["keys"].append(KEY)
        batches = {"poll_s": 0.1, "chunk_lines": 1, "max_in_flight_per_batch": 1}
        return simple_config(
            {"a": upstream.base_url},
            teams=teams,
            batches=batches,
            storage={"path": str(tmp_path / "data")},
        )

    path = tmp_path / "turnout.yaml"
    write(path, config("a"))
    server = ReloadingTurnout(path)
    server.start()
    try:
        client = server.client(KEY)
        created = start_batch(client, [line(f"l{n}") for n in range(3)])
        wait_for_calls(upstream, 1)
        write(path, config("b"))
        assert server.reload()

        reader = server.client(OTHER)
        batch = finished(reader, created.id)
        assert batch.error_file_id is not None
        text = reader.files.content(batch.error_file_id).read().decode()
    finally:
        server.stop()

    counts = batch.request_counts
    assert counts is not None
    assert (counts.completed, counts.failed) == (1, 2)
    assert len(upstream_calls(upstream)) == 1
    errors = [json.loads(x) for x in text.splitlines()]
    assert {x["response"]["status_code"] for x in errors} == {401}
    assert {x["response"]["body"]["error"]["code"] for x in errors} == {"invalid_api_key"}


def test_an_ended_batch_keeps_no_chunk_offsets(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Where each chunk starts is needed only while lines run; the record of a batch that
    ended is read by every listing for as long as it is kept."""
    batches = {"poll_s": 0.1, "chunk_lines": 1}
    server = turnout(simple_config({"a": upstream.base_url}, batches=batches))
    client = server.client()
    created = start_batch(client, [line(f"l{n}") for n in range(40)])
    assert finished(client, created.id).status == "completed"

    assert server.config.storage.path is not None
    database = Path(server.config.storage.path) / "turnout.sqlite3"
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT json FROM batches WHERE id = ?", (created.id,)).fetchone()
    assert json.loads(stored)["chunk_offsets"] == []
