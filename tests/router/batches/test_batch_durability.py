"""Batches survive their runners: real `turnout serve` processes killed with SIGKILL.

- One replica (SQLite and local disk): killed mid-batch and started again on the same
  storage, it finishes the batch; every line is in the output once, a line committed before
  the kill is never sent upstream again, and only the lines in flight at the kill are.
  Files that expired while it was down are swept as it starts, but not the input of a
  batch that has not ended.
- Two replicas (Redis records, S3 bytes from moto's server) drain one batch together; one is
  killed midway and the other finishes the batch once the dead one's leases run out.
- A shared Redis without a bucket is refused: by `check-config`, by `serve` at start-up,
  and by a reload (the running config keeps serving).

Each upstream call is counted per prompt (every line has its own), which is how "never
redone" is checked; nothing here asserts on timings, only on deadlines for progress.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from policies.storage.settings import S3Settings
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.redis_server import redis_url as redis_url
from tests.router.test_metrics import parse, value
from tests.router.test_reload import write
from tests.s3_server import s3_server as s3_server
from tests.s3_server import s3_settings as s3_settings
from tests.served import SERVE, ServedTurnout, free_port, served_turnout
from tests.turnout_server import simple_config

LINES = 60
IN_FLIGHT = 4  # batches.max_in_flight of each process: the most lines a kill can interrupt
CHUNK = 2 * IN_FLIGHT  # lines to a lease
HANG = Ok(delay=30)  # an upstream answer that outlasts the test: its line is in flight
DEADLINE_S = 60.0  # for progress on a slow, shared machine; never a pass/fail timing
FINAL = ("completed", "failed", "cancelled", "expired")
DATABASE = "turnout.sqlite3"  # policies/storage/factory.py


def batch_settings(lease_s: float) -> dict[str, Any]:
    return {"poll_s": 0.1, "lease_s": lease_s, "chunk_lines": CHUNK, "max_in_flight": IN_FLIGHT}


def prompt(line: int) -> str:
    return f"prompt {line}"


def number(custom_id: str) -> int:
    return int(custom_id.removeprefix("line-"))


def batch_input() -> bytes:
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": prompt(i)}]},
        }
        for i in range(LINES)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def client(served: ServedTurnout) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=2, timeout=20)


def start_batch(served: ServedTurnout) -> tuple[str, Batch]:
    """Upload the input and create the batch through `served`: (input file id, batch)."""
    sdk = client(served)
    uploaded = sdk.files.create(file=("in.jsonl", io.BytesIO(batch_input())), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return uploaded.id, batch


def calls(*upstreams: FakeOpenAIUpstream) -> Counter[str]:
    """Chat calls per prompt, over all the given upstreams."""
    counted: Counter[str] = Counter()
    for upstream in upstreams:
        for request in upstream.requests:
            if request.method == "POST" and request.path.endswith("/chat/completions"):
                counted[request.json["messages"][0]["content"]] += 1
    return counted


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def finished(served: ServedTurnout, batch_id: str) -> Batch:
    sdk = client(served)

    def done() -> Batch | None:
        batch = sdk.batches.retrieve(batch_id)
        return batch if batch.status in FINAL else None

    batch: Batch = wait_until(done, f"batch {batch_id} to finish")
    return batch


def output_lines(served: ServedTurnout, batch: Batch) -> list[dict[str, Any]]:
    """The output file's lines, after checking the batch completed with no error file."""
    assert batch.status == "completed", batch
    assert batch.error_file_id is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (LINES, LINES)
    assert batch.output_file_id is not None
    raw = client(served).files.content(batch.output_file_id).read()
    return [json.loads(line) for line in raw.decode().splitlines()]


def assert_each_line_once(lines: list[dict[str, Any]]) -> None:
    custom_ids = [line["custom_id"] for line in lines]
    assert sorted(custom_ids) == sorted(f"line-{i}" for i in range(LINES))
    assert len({line["id"] for line in lines}) == LINES
    assert all(line["response"]["status_code"] == 200 for line in lines)


def committed(storage: Path, batch_id: str) -> set[str]:
    """The custom_ids whose results the (dead) replica had committed to its database."""
    db = sqlite3.connect(storage / DATABASE)
    try:
        rows = db.execute("SELECT custom_id FROM lines WHERE batch_id = ?", (batch_id,))
        return {row[0] for row in rows}
    finally:
        db.close()


def test_sigkill_mid_batch_then_restart_runs_each_line_once(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    # The first `fast` calls are answered and the rest hang; `fast` is no multiple of
    # CHUNK, so the kill finds a chunk part committed, part in flight.
    fast = 2 * CHUNK + CHUNK // 2
    upstream.enqueue(*[Ok(delay=0.05)] * fast)
    upstream.set_default(HANG)
    storage = tmp_path / "data"
    config = simple_config(
        {"a": upstream.base_url},
        storage={"path": str(storage)},
        batches=batch_settings(lease_s=2),
    )
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, log=tmp_path / "first.log", own_group=True) as first:
        input_id, batch = start_batch(first)
        sdk = client(first)

        def progressed() -> bool:
            counts = sdk.batches.retrieve(batch.id).request_counts
            return counts is not None and counts.completed >= fast

        wait_until(progressed, "the answered lines to be committed")
        first.kill()

    before = committed(storage, batch.id)
    chunks = Counter(number(custom_id) // CHUNK for custom_id in before)
    assert any(count < CHUNK for count in chunks.values()), "no chunk was caught midway"
    upstream.set_default(Ok())

    with served_turnout(path, log=tmp_path / "second.log") as second:
        lines = output_lines(second, finished(second, batch.id))
        assert client(second).files.content(input_id).read() == batch_input()

    assert_each_line_once(lines)
    for line in lines:  # each answer belongs to its own line's prompt
        answer = line["response"]["body"]["choices"][0]["message"]["content"]
        assert answer == f"echo: {prompt(number(line['custom_id']))}"
    sent = calls(upstream)
    assert set(sent) == {prompt(i) for i in range(LINES)}
    assert all(count <= 2 for count in sent.values()), sent
    # Finished lines are never redone; only the lines in flight at the kill may be.
    assert all(sent[prompt(number(custom_id))] == 1 for custom_id in before)
    assert sum(sent.values()) <= LINES + IN_FLIGHT


def test_a_stopped_replica_gives_its_chunks_back_at_once(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    """Stopped (SIGTERM, not a crash), a runner cancels its lines in flight and ends their
    chunks' leases, so a restart takes them up at once: with a lease of ten minutes, the
    batch would otherwise wait that long."""
    upstream.set_default(HANG)
    config = simple_config(
        {"a": upstream.base_url},
        storage={"path": str(tmp_path / "data")},
        batches=batch_settings(lease_s=600),
    )
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, log=tmp_path / "first.log") as first:
        _, batch = start_batch(first)
        wait_until(lambda: calls(upstream).total() >= IN_FLIGHT, "lines to be in flight")
    # Leaving the block terminated it gracefully: its lines in flight were cancelled.
    upstream.set_default(Ok())

    with served_turnout(path, log=tmp_path / "second.log") as second:
        assert_each_line_once(output_lines(second, finished(second, batch.id)))


def test_restart_keeps_an_expired_input_file_until_its_batch_ends(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    """A runner sweeps expired files as it starts, but keeps the input of a batch still
    running (without it, the batch could neither run its other lines nor expire)."""
    upstream.set_default(HANG)
    storage = tmp_path / "data"
    config = simple_config(
        {"a": upstream.base_url},
        storage={"path": str(storage)},
        batches=batch_settings(lease_s=2),
    )
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, log=tmp_path / "first.log", own_group=True) as first:
        input_id, batch = start_batch(first)
        other = client(first).files.create(
            file=("notes.txt", io.BytesIO(b"hi")), purpose="user_data"
        )
        wait_until(lambda: calls(upstream).total() >= IN_FLIGHT, "lines to be in flight")
        first.kill()
    # Both files' `expires_after` ran out while Turnout was down.
    past = int(time.time()) - 60
    db = sqlite3.connect(storage / DATABASE)
    with db:
        db.executemany(
            "UPDATE files SET expires_at = ?, json = json_set(json, '$.expires_at', ?)"
            " WHERE id = ?",
            [(past, past, input_id), (past, past, other.id)],
        )
    upstream.set_default(Ok())

    with served_turnout(path, log=tmp_path / "second.log") as second:
        assert_each_line_once(output_lines(second, finished(second, batch.id)))
    with db:
        kept = {row[0] for row in db.execute("SELECT id FROM files")}
    db.close()
    assert input_id in kept
    assert other.id not in kept


@pytest.fixture
def replica_config(
    tmp_path: Path, redis_url: str, s3_settings: S3Settings
) -> Callable[[FakeOpenAIUpstream], dict[str, Any]]:
    """A config for one replica of a pair: the same Redis (its own prefix) and bucket
    (its own prefix), each replica its own upstream (same model), so the calls each
    replica made are counted apart."""
    token = secrets.token_hex(4)
    s3 = s3_settings.model_copy(update={"prefix": f"durability-{token}/"})

    def config(upstream: FakeOpenAIUpstream) -> dict[str, Any]:
        return simple_config(
            {"up": upstream.base_url},
            state={"redis_url": redis_url, "prefix": f"durability-{token}:"},
            storage={"path": str(tmp_path / secrets.token_hex(4)), "s3": s3.model_dump()},
            batches=batch_settings(lease_s=3),
        )

    return config


@pytest.fixture
def upstream_pair() -> Iterator[tuple[FakeOpenAIUpstream, FakeOpenAIUpstream]]:
    with FakeOpenAIUpstream() as a, FakeOpenAIUpstream() as b:
        # Each answer says which replica's upstream gave it. A answers a few lines, then
        # none: whatever A holds when it is killed is part committed, part in flight.
        a.enqueue(*[Ok(text="from a", delay=0.05)] * (CHUNK - 2))
        a.set_default(HANG)
        b.set_default(Ok(text="from b", delay=0.05))
        yield a, b


def test_two_replicas_drain_one_batch_and_survive_one_killed(
    tmp_path: Path,
    replica_config: Callable[[FakeOpenAIUpstream], dict[str, Any]],
    upstream_pair: tuple[FakeOpenAIUpstream, FakeOpenAIUpstream],
) -> None:
    up_a, up_b = upstream_pair
    path_a, path_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with (
        served_turnout(path_a, replica_config(up_a), log=tmp_path / "a.log", own_group=True) as a,
        served_turnout(path_b, replica_config(up_b), log=tmp_path / "b.log") as b,
    ):
        input_id, batch = start_batch(a)
        # A line's slot is freed only once the line is committed: IN_FLIGHT lines at most
        # in flight, so A's CHUNK-th call means CHUNK - IN_FLIGHT lines of A committed.
        wait_until(
            lambda: calls(up_a).total() >= CHUNK and calls(up_b).total() >= IN_FLIGHT,
            "both replicas to run lines",
        )
        a.kill()
        answered_by_b = calls(up_b).total()

        lines = output_lines(b, finished(b, batch.id))
        # The file uploaded through A is read through B: the bytes are in the bucket.
        assert client(b).files.content(input_id).read() == batch_input()
        assert client(b).files.retrieve(input_id).bytes == len(batch_input())

    assert_each_line_once(lines)
    by = {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
        for line in lines
    }
    assert set(by.values()) == {"from a", "from b"}  # both replicas answered lines
    sent_a, sent_b = calls(up_a), calls(up_b)
    assert sent_b.total() > answered_by_b, "the kill did not land mid-batch"
    sent = sent_a + sent_b
    assert set(sent) == {prompt(i) for i in range(LINES)}
    redone: set[str] = set()
    for custom_id, answer in by.items():
        sent_for = prompt(number(custom_id))
        if answer == "from a":  # committed by A before it died: never run again
            assert (sent_a[sent_for], sent_b[sent_for]) == (1, 0), custom_id
        elif sent_a[sent_for]:  # in flight on A at the kill: run again by B, once
            assert (sent_a[sent_for], sent_b[sent_for]) == (1, 1), custom_id
            redone.add(custom_id)
        else:
            assert sent_b[sent_for] == 1, custom_id
    assert 0 < len(redone) <= IN_FLIGHT
    assert sum(sent.values()) == LINES + len(redone)


SHARED_WITHOUT_BUCKET = ("storage.s3", "single_replica")


def test_shared_redis_without_a_bucket_is_refused_at_start(
    tmp_path: Path, upstream: FakeOpenAIUpstream, redis_url: str
) -> None:
    path = tmp_path / "turnout.yaml"
    write(
        path,
        simple_config(
            {"a": upstream.base_url},
            state={"redis_url": redis_url},
            storage={"path": str(tmp_path / "data")},
        ),
    )
    for command in (
        [*SERVE[:-1], "check-config", str(path)],
        [*SERVE, "--config", str(path), "--port", str(free_port())],
    ):
        told = refusal(command)
        assert all(name in told for name in SHARED_WITHOUT_BUCKET), told


def refusal(command: list[str]) -> str:
    """What `command` says on stderr as it exits non-zero; a failure if it runs on (a
    server that started after all: its whole process group is killed)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{command} was not refused")
    assert process.returncode != 0
    return stderr.decode()


def test_single_replica_with_shared_redis_starts_and_refuses_a_reload_without_it(
    tmp_path: Path, upstream: FakeOpenAIUpstream, redis_url: str
) -> None:
    path = tmp_path / "turnout.yaml"
    config = simple_config(
        {"a": upstream.base_url},
        state={"redis_url": redis_url, "prefix": f"durability-{secrets.token_hex(4)}:"},
        storage={"path": str(tmp_path / "data"), "single_replica": True},
    )
    write(path, config)
    with served_turnout(path, log=tmp_path / "turnout.log") as served:
        sdk = client(served)
        kept = sdk.files.create(file=("in.jsonl", io.BytesIO(batch_input())), purpose="batch")

        def reloads(result: str) -> float:
            samples = parse(httpx.get(f"{served.url}/metrics", timeout=5).text)
            return value(samples, "turnout_config_reloads_total", result=result)

        storage = {"path": str(tmp_path / "data")}  # single_replica dropped
        write(path, config | {"storage": storage})
        wait_until(lambda: reloads("rejected") == 1, "the reload to be rejected")
        rejected = [
            event
            for line in (tmp_path / "turnout.log").read_text().splitlines()
            if line.startswith("{")
            and (event := json.loads(line))["event"] == "config_reload_rejected"
        ]
        assert rejected
        assert all(name in rejected[0]["error"] for name in SHARED_WITHOUT_BUCKET)
        assert reloads("ok") == 0
        # The running config still serves, its storage included.
        assert sdk.files.content(kept.id).read() == batch_input()
        answer = sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "still here"}]
        )
        assert answer.choices[0].message.content == "echo: still here"
