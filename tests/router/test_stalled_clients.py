"""What one client can hold, against the real `turnout serve` under each ASGI server: a
stream whose reader stops reading is cut after `server.send_timeout` (its upstream call
cancelled, logged as 499, never a backend failure), and one credential cannot hold more
than `server.max_connections_per_key` requests at once, so other tenants still get in.
Waits on the server only stop a hang; no timing is asserted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.router.test_slow_clients import Served, serving
from tests.turnout_server import simple_config

TENANT_A, TENANT_B = "sk-stall-tenant-a", "sk-stall-tenant-b"
SEND_TIMEOUT = 1.5
PER_KEY = 2
HANG = 30.0
# 200 SSE events of 64 KiB: far more than the socket buffers between Turnout and a
# client that reads nothing hold, so Turnout's writes must block.
HUGE = " ".join(["x" * 65536] * 200)


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"stall-{request.param}")
    with FakeOpenAIUpstream() as upstream:
        config = simple_config(
            {"a": upstream.base_url},
            keys=[{"key": TENANT_A}, {"key": TENANT_B}],
            server={
                "body_timeout": 15,
                "max_connections": 4,
                "max_connections_per_key": PER_KEY,
                "send_timeout": SEND_TIMEOUT,
            },
            timeouts={"connect": 2, "first_byte": 5, "stream_idle": 60, "total": 120},
            breaker={"failures": 1, "cooldown": 600},
        )
        with serving(config, tmp, request.param, upstream) as served:
            yield served


def _request(key: str, body: bytes, request_id: str, declared: int | None = None) -> bytes:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        f"x-request-id: {request_id}\r\ncontent-length: {declared or len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_a_stream_whose_reader_stalls_is_cut_and_logged_499(served: Served) -> None:
    served.upstream.enqueue(Ok(text=HUGE))
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", served.port))
    try:
        reader.sendall(_request(TENANT_A, body, "stalled-reader"))
        entry = served.request_logs("stalled-reader", timeout=HANG)  # never reads a byte
    finally:
        reader.close()
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")
    served.upstream.wait_for_client_closes(1, timeout=HANG)  # the upstream call was cancelled
    answer = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {TENANT_A}"},
        timeout=HANG,
    )
    assert answer.status_code == 200  # no breaker opened: a stalled client is no failure


def test_one_key_cannot_hold_more_than_its_share(served: Served) -> None:
    async def scenario() -> tuple[int, int]:
        held = []
        for i in range(PER_KEY):  # slow bodies: each holds a request slot
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(_request(TENANT_A, b'{"model": ', f"share-{i}", declared=60_000))
            await writer.drain()
            held.append(writer)
        try:
            await asyncio.sleep(0.3)  # the server has their heads
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(_request(TENANT_A, b'{"model": ', "share-over", declared=60_000))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), HANG)
            writer.close()
            other = await asyncio.to_thread(
                httpx.post,
                f"{served.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {TENANT_B}"},
                timeout=HANG,
            )
        finally:
            for w in held:
                w.close()
        return int(line.split(b" ", 2)[1]), other.status_code

    assert asyncio.run(scenario()) == (429, 200)
