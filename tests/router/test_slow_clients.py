"""Slow and numerous clients, against the real `turnout serve` under each ASGI server:
a body that trickles is cut after `server.body_timeout`; a key over its limit is refused
from the headers, before it sends any body; requests past `server.max_connections` are
refused at once; a client that goes away is logged as 499, never as a failure; sockets
that send nothing, or trickle their headers, neither lock clients out nor are held past
`server.header_timeout`.

The slow clients are raw asyncio streams, since an HTTP library sends its body at once.
Every wait on the server has a generous bound that only stops a hang (no timing is
asserted): old code, which never cuts a body, fails on those bounds."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.served import served_turnout
from tests.turnout_server import simple_config

OPEN_KEY = "sk-slow-test-open"
LIMITED_KEY = "sk-slow-test-limited"  # one request a minute
BODY_TIMEOUT = 1.5
HEADER_TIMEOUT = 1.5
MAX_CONNECTIONS = 4
HANG = 20.0  # only a server that never answers takes this long
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    server: str
    log: Path
    upstream: FakeOpenAIUpstream

    def request_logs(self, client_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The `request` log line of the request sent with `x-request-id: client_id`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                ids = (entry.get("request_id"), entry.get("client_request_id"))
                if entry.get("event") == "request" and client_id in ids:
                    return dict(entry)
            time.sleep(0.05)
        raise AssertionError(f"no request log line for {client_id}")


@contextmanager
def serving(
    config: dict[str, Any], tmp: Path, server: str, upstream: FakeOpenAIUpstream
) -> Iterator[Served]:
    """`turnout serve` with `config` under `server`; its file and its log in `tmp`."""
    log = tmp / "turnout.log"
    with served_turnout(
        tmp / "turnout.yaml", config, server=server, log=log, stdout=subprocess.DEVNULL
    ) as turnout:
        yield Served(turnout.url, turnout.port, server, log, upstream)


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"slow-{request.param}")
    with FakeOpenAIUpstream() as upstream:
        config = simple_config(
            {"a": upstream.base_url},
            keys=[{"key": OPEN_KEY}, {"key": LIMITED_KEY, "limits": {"rpm": 1}}],
            server={
                "body_timeout": BODY_TIMEOUT,
                "header_timeout": HEADER_TIMEOUT,
                "max_connections": MAX_CONNECTIONS,
                # One key fills every slot here: its share is the whole (the share has its
                # own tests, tests/router/test_stalled_clients.py).
                "max_connections_per_key": MAX_CONNECTIONS,
            },
            # One failure would open it: a client going away must not count as one.
            breaker={"failures": 1, "cooldown": 600},
        )
        with serving(config, tmp, request.param, upstream) as served:
            yield served


def _head(key: str, length: int, request_id: str = "") -> bytes:
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "host: 127.0.0.1",
        f"authorization: Bearer {key}",
        "content-type: application/json",
        f"content-length: {length}",
    ]
    if request_id:
        lines.append(f"x-request-id: {request_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer_to(port: int, head: bytes, *, trickle: bool) -> tuple[int, bytes]:
    """Send `head`, then (when `trickle`) one body byte every 0.1 s; return the status and
    everything the server sent until it closed the connection (status 0: it reset the
    connection before a response could be read: closing a socket while the client is
    still sending makes the kernel answer with a reset, which may discard the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()

    async def drip() -> None:
        while True:
            await asyncio.sleep(0.1)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        received = await asyncio.wait_for(_until_closed(reader), HANG)
    finally:
        if dripping is not None:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
        writer.close()
    status = int(received.split(b" ", 2)[1]) if received else 0
    return status, received


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    try:
        while block := await reader.read(65536):
            received += block
    except ConnectionResetError:
        pass
    return received


def _json_body(raw: bytes) -> Any:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def test_a_stalled_body_is_answered_408_in_openais_envelope(served: Served) -> None:
    head = _head(OPEN_KEY, 60_000, "stalled-body") + b'{"model": '
    status, raw = asyncio.run(_answer_to(served.port, head, trickle=False))
    assert status == 408
    error = _json_body(raw)["error"]
    assert error["code"] == "request_timeout"
    assert error["type"] == "invalid_request_error"
    assert served.request_logs("stalled-body")["status"] == 408


def test_trickling_bodies_are_cut_however_steadily_they_drip(served: Served) -> None:
    """A byte every 0.1 s never lets the deadline slip: it is for the whole body. The
    server's log is the witness: a client still sending when the server closes may get a
    reset in place of the 408 (status 0 here)."""
    ids = [f"trickle-{i}" for i in range(MAX_CONNECTIONS)]

    async def many() -> list[int]:
        heads = [_head(OPEN_KEY, 60_000, request_id) for request_id in ids]
        answers = await asyncio.gather(
            *(_answer_to(served.port, head, trickle=True) for head in heads)
        )
        return [status for status, _ in answers]

    assert set(asyncio.run(many())) <= {408, 0}  # every connection ended
    assert [served.request_logs(request_id)["status"] for request_id in ids] == [408] * len(ids)


def test_a_key_over_its_rpm_is_refused_before_it_sends_a_body(served: Served) -> None:
    first = httpx.post(
        f"{served.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {LIMITED_KEY}"},
        timeout=HANG,
    )
    assert first.status_code == 200
    # The head alone, announcing a body that never comes: the answer cannot wait for it.
    status, raw = asyncio.run(_answer_to(served.port, _head(LIMITED_KEY, 60_000), trickle=False))
    assert status == 429
    assert _json_body(raw)["error"]["code"] == "rate_limit_exceeded"
    assert b"retry-after:" in raw.lower()


def test_requests_past_max_connections_are_refused_at_once(served: Served) -> None:
    text = " ".join(["word"] * 200)
    served.upstream.enqueue(*(Ok(text=text, chunk_delay=0.2) for _ in range(MAX_CONNECTIONS)))
    streaming = {**CHAT, "stream": True}
    headers = {"authorization": f"Bearer {OPEN_KEY}"}
    with httpx.Client(base_url=served.url, timeout=HANG, headers=headers) as probe:
        held: list[tuple[httpx.Client, httpx.Response, Iterator[str]]] = []
        try:
            for _ in range(MAX_CONNECTIONS):
                client = httpx.Client(base_url=served.url, timeout=HANG, headers=headers)
                response = client.send(
                    client.build_request("POST", "/v1/chat/completions", json=streaming),
                    stream=True,
                )
                lines = response.iter_lines()  # kept: dropping it closes the connection
                held.append((client, response, lines))
                assert next(lines).startswith("data: ")  # in flight
            refused = probe.post("/v1/chat/completions", json=CHAT)
        finally:
            for client, response, _ in held:
                response.close()
                client.close()
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "server_overloaded"
        assert refused.headers["retry-after"] == "1"
        # Once the server has seen them go (at its next write to each), it serves again.
        deadline = time.monotonic() + HANG
        while (status := probe.post("/v1/chat/completions", json=CHAT).status_code) == 503:
            assert time.monotonic() < deadline, "still refusing after the clients left"
            time.sleep(0.1)
        assert status == 200


def test_a_client_gone_while_sending_its_body_is_logged_as_499(served: Served) -> None:
    async def go_away() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(_head(OPEN_KEY, 1000, "gone-in-body") + b'{"model": ')
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    asyncio.run(go_away())
    entry = served.request_logs("gone-in-body")
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")


def test_a_client_gone_while_waiting_upstream_is_logged_as_499_not_a_failure(
    served: Served,
) -> None:
    served.upstream.enqueue(Ok(delay=3))
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{served.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {OPEN_KEY}", "x-request-id": "gone-waiting"},
            timeout=0.5,
        )
    entry = served.request_logs("gone-waiting")
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")
    # The breaker opens after one failure: the next request is served, so it saw none.
    answer = httpx.post(
        f"{served.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {OPEN_KEY}"},
        timeout=HANG,
    )
    assert answer.status_code == 200


def test_a_client_gone_mid_stream_is_logged_as_499(served: Served) -> None:
    served.upstream.enqueue(Ok(text=" ".join(["word"] * 100), chunk_delay=0.1))
    headers = {"authorization": f"Bearer {OPEN_KEY}", "x-request-id": "gone-mid-stream"}
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers=headers,
        timeout=HANG,
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")
    entry = served.request_logs("gone-mid-stream")
    assert (entry["status"], entry["outcome"]) == (499, "client_closed")


def test_sockets_that_send_nothing_do_not_lock_clients_out(served: Served) -> None:
    """What is capped is requests in flight, not sockets: as many idle sockets as the cap
    (uvicorn's own `limit_concurrency` would count them) leave requests served."""
    idle = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        answer = httpx.post(
            f"{served.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {OPEN_KEY}"},
            timeout=HANG,
        )
        assert answer.status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_idle_sockets_far_past_the_cap_do_not_lock_clients_out(served: Served) -> None:
    """granian counts sockets against its backpressure: when that was twice the request
    cap, this many silent sockets left a keyed request waiting for ever."""
    idle = [
        socket.create_connection(("127.0.0.1", served.port)) for _ in range(3 * MAX_CONNECTIONS)
    ]
    try:
        answer = httpx.post(
            f"{served.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {OPEN_KEY}"},
            timeout=5,
        )
        assert answer.status_code == 200
    finally:
        for sock in idle:
            sock.close()


async def _held_until_closed(port: int, kind: str) -> bytes:
    """Open a connection that never completes a request's headers, and wait for the
    server to close it: `idle` sends nothing, `trickle` drips a header a byte every 0.2 s,
    `kept_alive` is left open after one answered request. What the server sent back is
    returned (the answer to the request, for `kept_alive`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    if kind == "kept_alive":
        writer.write(b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        received = await reader.readuntil(b"\r\n\r\n")
    elif kind == "trickle":
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")

    async def drip() -> None:
        while kind == "trickle":
            await asyncio.sleep(0.2)
            writer.write(b"a")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        return received + await asyncio.wait_for(_until_closed(reader), HANG)
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()


def test_sockets_that_never_finish_their_headers_are_closed(served: Served) -> None:
    """Without `server.header_timeout` (uvicorn had none; granian's ran only from the first
    byte), these were held for as long as the client liked: the wait hits HANG."""
    kinds = ["idle", "trickle", "kept_alive"] * 2

    async def all_kinds() -> list[bytes]:
        return await asyncio.gather(*(_held_until_closed(served.port, kind) for kind in kinds))

    received = list(zip(kinds, asyncio.run(all_kinds()), strict=True))
    # Closed without a word (both servers), after the answer for the one kept alive.
    assert [raw for kind, raw in received if kind != "kept_alive"] == [b""] * 4
    assert all(raw.startswith(b"HTTP/1.1 200") for kind, raw in received if kind == "kept_alive")
