"""`limits: {concurrency: N}` end to end, per key and per team, over real HTTP on
loopback: the N+1th request in flight is refused with 429 from its headers, before it
sends its body; the slot comes back when a request ends however it ends (answered, an
upstream error, a stream read to its end, the client gone: 499). With Redis, two
replicas share one count. Waits only stop a hang; no timing is asserted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, StallMidStream, Status
from tests.redis_server import redis_url as redis_url
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEY, OTHER, MATE = "sk-conc-key", "sk-conc-other", "sk-conc-mate"
HANG = 20.0


def config(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    return simple_config(
        {"up": upstream.base_url},
        # A held stream stays held: only the test ends it.
        timeouts={"connect": 2, "first_byte": 5, "stream_idle": 60, "total": 120},
        **overrides,
    )


def post(server: RunningTurnout, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/chat/completions",
        json={**CHAT, **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=HANG,
    )


@contextmanager
def held_stream(server: RunningTurnout, key: str) -> Iterator[httpx.Response]:
    """A stream in flight (its upstream stalls after one event) until the block ends,
    when the client goes away (a 499)."""
    with (
        httpx.Client(timeout=HANG) as client,
        client.stream(
            "POST",
            f"{server.base_url}/chat/completions",
            json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines).startswith("data: ")
        yield response


def refused_in_flight(answer: httpx.Response, scope: str) -> None:
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"
    error = answer.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert f"in flight for this {scope}" in error["message"]


def passes_soon(server: RunningTurnout, key: str) -> httpx.Response:
    """The slot of a request that just ended comes back once the server has seen it end
    (a client gone is noticed a moment later): retried until then, within a bound."""
    deadline = time.monotonic() + HANG
    while (answer := post(server, key)).status_code == 429:
        assert time.monotonic() < deadline, "the slot never came back"
        time.sleep(0.05)
    return answer


async def status_before_body(server: RunningTurnout, key: str) -> int:
    """The status answered to a request whose head declares a body it never sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        "content-length: 60000\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    try:
        line = await asyncio.wait_for(reader.readline(), HANG)
    finally:
        writer.close()
    return int(line.split(b" ", 2)[1])


def test_key_concurrency_refuses_the_next_before_its_body_and_frees_on_every_end(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    keys = [{"key": KEY, "limits": {"concurrency": 1, "rpm": 100}}, {"key": OTHER}]
    server = turnout(config(upstream, keys=keys))

    upstream.enqueue(StallMidStream(after_events=1, seconds=60))
    with held_stream(server, KEY):
        refused_in_flight(post(server, KEY), "key")
        assert asyncio.run(status_before_body(server, KEY)) == 429  # no body was sent
        assert post(server, OTHER).status_code == 200  # another key is not held up
        chat_calls = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
        assert len(chat_calls) == 2  # the refused ones never reached the upstream
    # The client went away mid-stream (499): its slot comes back.
    assert passes_soon(server, KEY).status_code == 200
    # Answered, then an upstream error, then a stream read to its end: each frees it.
    assert post(server, KEY).status_code == 200
    upstream.enqueue(Status(400))
    assert post(server, KEY).status_code == 400
    streamed = post(server, KEY, stream=True)
    assert streamed.status_code == 200
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert post(server, KEY).status_code == 200
    # The rpm limit was not charged for the requests refused for concurrency.
    assert int(post(server, KEY).headers["x-ratelimit-remaining-requests"]) > 90


def test_a_slow_body_holds_its_slot_until_the_client_goes_away(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, keys=[{"key": KEY, "limits": {"concurrency": 1}}]))

    async def scenario() -> tuple[int, int]:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: 60000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"model": ')
        await writer.drain()
        await asyncio.sleep(0.3)  # the slow body is being read: its slot is held
        held = await asyncio.to_thread(post, server, KEY)
        writer.close()
        await writer.wait_closed()
        after = await asyncio.to_thread(passes_soon, server, KEY)
        return held.status_code, after.status_code

    assert asyncio.run(scenario()) == (429, 200)


def test_team_concurrency_counts_every_key_of_the_team(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    teams = {"t": {"keys": [KEY, MATE], "limits": {"concurrency": 2}}}
    server = turnout(config(upstream, teams=teams))

    upstream.enqueue(
        StallMidStream(after_events=1, seconds=60), StallMidStream(after_events=1, seconds=60)
    )
    with held_stream(server, KEY), held_stream(server, MATE):
        refused_in_flight(post(server, KEY), "team")
        refused_in_flight(post(server, MATE), "team")
    assert passes_soon(server, MATE).status_code == 200


def test_team_key_limits_apply_to_each_key(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    teams = {"t": {"keys": [KEY, MATE], "key_limits": {"concurrency": 1}}}
    server = turnout(config(upstream, teams=teams))

    upstream.enqueue(StallMidStream(after_events=1, seconds=60))
    with held_stream(server, KEY):
        refused_in_flight(post(server, KEY), "key")
        assert post(server, MATE).status_code == 200


def test_replicas_sharing_redis_share_one_count(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, redis_url: str
) -> None:
    state = {"redis_url": redis_url, "prefix": f"conc-{time.monotonic_ns()}:"}
    keys = [{"key": KEY, "limits": {"concurrency": 1}}]
    one = {"single_replica": True}
    first = turnout(config(upstream, keys=keys, state=state, storage=one))
    second = turnout(config(upstream, keys=keys, state=state, storage=one))

    upstream.enqueue(StallMidStream(after_events=1, seconds=60))
    with held_stream(first, KEY):
        refused_in_flight(post(second, KEY), "key")
        refused_in_flight(post(first, KEY), "key")
    assert passes_soon(second, KEY).status_code == 200


@pytest.mark.parametrize(("when", "status"), [("allow", 200), ("refuse", 503)])
def test_concurrency_with_the_store_down_follows_limits_when_unavailable(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, when: str, status: int
) -> None:
    with socket_nobody_listens_on() as url:
        state = {"redis_url": url, "timeout": 0.2, "limits_when_unavailable": when}
        keys = [{"key": KEY, "limits": {"concurrency": 1}}]
        one = {"single_replica": True}
        server = RunningTurnout(config(upstream, keys=keys, state=state, storage=one))
        server.start(ready=False)
        try:
            answer = post(server, KEY)
        finally:
            server.stop()
    assert answer.status_code == status
    if status == 503:
        assert answer.json()["error"]["code"] == "state_unavailable"


@contextmanager
def socket_nobody_listens_on() -> Iterator[str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
