"""Checks of the fake OpenAI upstream itself, with plain httpx (and raw sockets for RST)."""

from __future__ import annotations

import base64
import itertools
import json
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from .openai_upstream import (
    MID_STREAM_ERROR,
    CutStream,
    FakeOpenAIUpstream,
    MalformedEvent,
    MidStreamError,
    Ok,
    Reset,
    Silence,
    StallMidStream,
    Status,
    content_policy_violation,
    context_length_exceeded,
    rate_limited,
)

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello big world"}],
}
STREAM: dict[str, Any] = {**CHAT, "stream": True}


@pytest.fixture
def up() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as server:
        yield server


@pytest.fixture
def client(up: FakeOpenAIUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.base_url, timeout=5) as c:
        yield c


def sse_data(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comments ignored)."""
    text = raw.decode().replace("\r\n", "\n")
    return [
        line.removeprefix("data: ")
        for block in text.split("\n\n")
        for line in block.split("\n")
        if line.startswith("data: ")
    ]


def raw_request(up: FakeOpenAIUpstream, body: Mapping[str, Any]) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", up.port), timeout=5)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def recv_until_error(sock: socket.socket) -> tuple[bytes, BaseException | None]:
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except OSError as exc:
        return got, exc
    return got, None


def test_chat_completion_json(client: httpx.Client) -> None:
    r = client.post("/chat/completions", json={**CHAT, "n": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"] == "fp_fake"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: hello big world",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert r.headers["x-request-id"].startswith("req_")


def test_chat_stream_with_usage(client: httpx.Client) -> None:
    req = {**STREAM, "stream_options": {"include_usage": True}}
    r = client.post("/chat/completions", json=req)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_data(r.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "gpt-4o-mini", "chat.completion.chunk")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1]]
    assert content == ["echo:", " hello", " big", " world", ""]
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 7
    # without include_usage there is no usage key and no usage chunk
    plain = [
        json.loads(e) for e in sse_data(client.post("/chat/completions", json=STREAM).content)[:-1]
    ]
    assert all("usage" not in c and c["choices"] for c in plain)


def test_completions_batch_tokens_and_stream(client: httpx.Client) -> None:
    body = client.post(
        "/completions", json={"model": "m", "prompt": ["a b", [1, 2, 3]], "n": 2}
    ).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert [(c["index"], c["text"]) for c in body["choices"]] == [
        (0, "echo: a b"),
        (1, "echo: a b"),
        (2, "echo: 1 2 3"),
        (3, "echo: 1 2 3"),
    ]
    assert body["usage"]["prompt_tokens"] == 5
    events = sse_data(
        client.post("/completions", json={"model": "m", "prompt": "x y", "stream": True}).content
    )
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "echo: x y"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_deterministic_and_base64(client: httpx.Client) -> None:
    req = {"model": "text-embedding-3-small", "input": ["alpha", "beta gamma"]}
    first, again = (client.post("/embeddings", json=req).json() for _ in range(2))
    assert first == again
    assert first["object"] == "list"
    assert first["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vecs = [d["embedding"] for d in first["data"]]
    assert [d["index"] for d in first["data"]] == [0, 1]
    assert len(vecs[0]) == 8
    assert vecs[0] != vecs[1]
    b64 = client.post("/embeddings", json={**req, "encoding_format": "base64"}).json()
    decoded = list(struct.unpack("<8f", base64.b64decode(b64["data"][1]["embedding"])))
    assert decoded == vecs[1]
    tokens = client.post("/embeddings", json={"model": "e", "input": [[1, 2], [3]]}).json()
    assert len(tokens["data"]) == 2
    assert tokens["usage"]["prompt_tokens"] == 3


def test_models_do_not_consume_queue_and_errors(
    up: FakeOpenAIUpstream, client: httpx.Client
) -> None:
    up.enqueue(Status(500))
    models = client.get("/models").json()
    assert models["object"] == "list"
    assert {m["object"] for m in models["data"]} == {"model"}
    assert "gpt-4o-mini" in [m["id"] for m in models["data"]]
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert client.post("/chat/completions", json=CHAT).status_code == 200  # queue empty → Ok
    missing = client.post("/chat/completions", json={"messages": CHAT["messages"]})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "model"
    assert client.post("/nope", json=CHAT).json()["error"]["type"] == "invalid_request_error"


def test_status_and_helpers(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(
        rate_limited(retry_after="1", retry_after_ms="1500"),
        context_length_exceeded(),
        content_policy_violation(),
        Status(502, body=b"<html>bad gateway</html>", headers={"content-type": "text/html"}),
        Status(418, type="teapot", code_str="short_and_stout", message="no", param="p"),
    )
    r = client.post("/chat/completions", json=CHAT)
    assert (r.status_code, r.headers["retry-after"], r.headers["retry-after-ms"]) == (
        429,
        "1",
        "1500",
    )
    assert r.json()["error"]["type"] == "requests"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    ctx = client.post("/chat/completions", json=CHAT).json()["error"]
    assert (ctx["code"], ctx["param"]) == ("context_length_exceeded", "messages")
    assert "maximum context length" in ctx["message"]
    policy = client.post("/chat/completions", json=CHAT)
    assert (policy.status_code, policy.json()["error"]["code"]) == (400, "content_policy_violation")
    raw = client.post("/chat/completions", json=CHAT)
    assert (raw.status_code, raw.content, raw.headers["content-type"]) == (
        502,
        b"<html>bad gateway</html>",
        "text/html",
    )
    custom = client.post("/chat/completions", json=CHAT)
    assert custom.status_code == 418
    assert custom.json() == {
        "error": {"message": "no", "type": "teapot", "param": "p", "code": "short_and_stout"}
    }


def test_recording_keep_alive_and_reset(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/chat/completions?x=1", json=CHAT, headers={"X-Trace": "t1"})
    reqs = up.wait_for_requests(3)
    assert len({r.connection_id for r in reqs}) == 1  # pooled connection reused
    assert reqs[0].method == "POST"
    assert (reqs[0].path, reqs[0].query) == ("/v1/chat/completions", "x=1")
    assert reqs[0].headers["x-trace"] == "t1"
    assert reqs[0].json == CHAT
    assert reqs[0].time <= reqs[1].time <= reqs[2].time <= time.monotonic()
    up.enqueue(Status(500))
    up.reset()
    assert up.requests == []
    assert up.queued == 0
    assert client.post("/chat/completions", json=CHAT).status_code == 200
    with pytest.raises(TimeoutError):
        up.wait_for_requests(2, timeout=0.05)


def test_ok_text_delay_headers(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(Ok(text="custom answer", delay=0.2, headers={"X-Extra": "yes"}))
    t0 = time.monotonic()
    r = client.post("/chat/completions", json=CHAT)
    assert time.monotonic() - t0 >= 0.2
    assert r.json()["choices"][0]["message"]["content"] == "custom answer"
    assert r.headers["x-extra"] == "yes"
    t0 = time.monotonic()
    client.post("/chat/completions", json=CHAT)
    assert time.monotonic() - t0 < 0.2  # no delay by default


def test_chunk_delay_really_streams(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(Ok(chunk_delay=0.1))
    arrivals: list[float] = []
    with client.stream("POST", "/chat/completions", json=STREAM) as r:
        for _ in r.iter_raw():
            arrivals.append(time.monotonic())
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.4


def test_crlf_comments_split_and_no_done(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(Ok(crlf=True, comments=True), Ok(split=True), Ok(no_done=True))
    crlf = client.post("/chat/completions", json=STREAM).content
    assert b"\r\n\r\n" in crlf
    assert b"\n\n" not in crlf.replace(b"\r\n", b"")
    assert crlf.count(b": keep-alive") == len(sse_data(crlf)) - 1
    assert sse_data(crlf)[-1] == "[DONE]"
    with client.stream("POST", "/chat/completions", json=STREAM) as r:
        pieces = list(r.iter_raw())
    assert any(b"data: " in p and not p.endswith(b"\n\n") for p in pieces)  # mid-line split
    assert sse_data(b"".join(pieces))[-1] == "[DONE]"
    no_done = client.post("/chat/completions", json=STREAM)  # body completes cleanly
    events = sse_data(no_done.content)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"


def test_reset_sends_rst(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(Reset(), Reset())
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/chat/completions", json=CHAT)
    with raw_request(up, CHAT) as sock:
        got, err = recv_until_error(sock)
    assert (got, type(err)) == (b"", ConnectionResetError)
    assert len(up.requests) == 2


def test_silence_times_out_and_stop_is_prompt() -> None:
    up = FakeOpenAIUpstream().start()
    up.set_default(Silence())
    with httpx.Client(base_url=up.base_url, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/chat/completions", json=CHAT)
    sock = raw_request(up, CHAT)  # stays pending, server-side handler sleeping
    up.wait_for_requests(2)
    t0 = time.monotonic()
    up.stop()
    assert time.monotonic() - t0 < 1.0
    got, _ = recv_until_error(sock)
    sock.close()
    assert got == b""


def test_stall_mid_stream(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(StallMidStream(after_events=2, seconds=0.4))
    stamps: list[tuple[float, str]] = []
    with client.stream("POST", "/chat/completions", json=STREAM) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                stamps.append((time.monotonic(), line[6:]))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
    assert gaps[1] >= 0.35  # between event 2 and 3
    assert max(gaps[:1] + gaps[2:]) < 0.2
    assert stamps[-1][1] == "[DONE]"
    up.enqueue(StallMidStream(after_events=2))
    seen: list[str] = []
    with (
        httpx.Client(base_url=up.base_url, timeout=0.3) as c,
        c.stream("POST", "/chat/completions", json=STREAM) as r,
        pytest.raises(httpx.ReadTimeout),
    ):
        seen.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert len(seen) == 2


def test_cut_stream(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(CutStream(after_events=2), CutStream(after_events=3), CutStream())
    seen: list[str] = []
    with (
        client.stream("POST", "/chat/completions", json=STREAM) as r,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        seen.extend(line for line in r.iter_lines() if line.startswith("data: "))
    assert len(seen) == 2
    with raw_request(up, STREAM) as sock:
        got, err = recv_until_error(sock)
    assert isinstance(err, ConnectionResetError)
    assert len(sse_data(got.split(b"\r\n\r\n", 1)[1])) == 3
    assert not got.endswith(b"0\r\n\r\n")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # non-stream: half body
        client.post("/chat/completions", json=CHAT)


def test_malformed_event_and_mid_stream_error(up: FakeOpenAIUpstream, client: httpx.Client) -> None:
    up.enqueue(MalformedEvent(after_events=1), MidStreamError(after_events=2), MalformedEvent())
    events = sse_data(client.post("/chat/completions", json=STREAM).content)
    assert events[1] == "{this is not json"
    assert events[-1] == "[DONE]"
    assert len(events) == 1 + 6 + 1  # normal stream is 6 events + [DONE]
    events = sse_data(client.post("/chat/completions", json=STREAM).content)
    assert len(events) == 4
    assert json.loads(events[2]) == json.loads(MID_STREAM_ERROR)
    assert json.loads(events[2])["error"]["message"] == "upstream broke"
    assert events[3] == "[DONE]"
    bad = client.post("/chat/completions", json=CHAT)
    assert (bad.status_code, bad.content) == (200, b"{this is not json")


@pytest.mark.asyncio
async def test_async_context_manager() -> None:
    async with FakeOpenAIUpstream() as up, httpx.AsyncClient(base_url=up.base_url) as c:
        up.enqueue(Ok(text="async ok"))
        r = await c.post("/chat/completions", json=CHAT)
        assert r.json()["choices"][0]["message"]["content"] == "async ok"
        assert len(up.requests) == 1
    with pytest.raises(RuntimeError):
        _ = up.base_url
