"""The seven endpoints through the sync and the async SDK, the accounting headers every
answer carries, and the one structured log line every request ends with."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import structlog

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.turnout_server import RunningTurnout, simple_config

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello there"}]
MODELS = {
    "m": {"deployments": [{"provider": "a", "model": "a-model"}]},
    "org/model": {"deployments": [{"provider": "a", "model": "vendor/a-model-2"}]},
}
ACCOUNTING = ("x-request-id", "x-turnout-deployment", "x-turnout-attempts", "x-turnout-model")


@dataclass
class Gateway:
    upstream: FakeOpenAIUpstream
    turnout: RunningTurnout
    client: openai.OpenAI
    http: httpx.Client


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with FakeOpenAIUpstream() as up:
        turnout = RunningTurnout(simple_config({"a": up.base_url}, models=MODELS)).start()
        try:
            with turnout.client() as client, turnout.http() as http:
                yield Gateway(up, turnout, client, http)
        finally:
            turnout.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request: pytest.FixtureRequest) -> None:
    if "gw" in request.fixturenames:
        request.getfixturevalue("gw").upstream.reset()


RequestLog = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def request_log() -> Iterator[RequestLog]:
    """structlog rendering JSON lines into a buffer; returns the parsed `request` lines.
    The previous structlog configuration is restored afterwards."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )

    def lines() -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
        return [entry for entry in parsed if entry.get("event") == "request"]

    try:
        yield lines
    finally:
        structlog.configure(**saved)


def line_for(log: RequestLog, request_id: str) -> dict[str, Any]:
    """The one line for Turnout's `request_id`, or for the client's own id."""
    matching = [
        entry
        for entry in log()
        if request_id in (entry["request_id"], entry.get("client_request_id"))
    ]
    assert len(matching) == 1, f"want one log line for {request_id}, got {matching}"
    return matching[0]


def assert_answered_by(headers: httpx.Headers, deployment: str, model: str, attempts: int) -> None:
    assert headers["x-request-id"]
    assert headers["x-turnout-deployment"] == deployment
    assert headers["x-turnout-model"] == model
    assert headers["x-turnout-attempts"] == str(attempts)


# ---------------------------------------------------------------------------------------------
# The endpoints, sync SDK
# ---------------------------------------------------------------------------------------------


def test_completions_sync(gw: Gateway) -> None:
    answer = gw.client.completions.create(model="m", prompt="say hi")
    assert answer.object == "text_completion"
    assert answer.choices[0].text == "echo: say hi"
    assert answer.model == "a-model"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 5  # 2 prompt words + 3 answer words
    assert gw.upstream.requests[-1].path == "/v1/completions"


def test_completions_stream_sync(gw: Gateway) -> None:
    chunks = list(gw.client.completions.create(model="m", prompt="say hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "echo: say hi"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_sync(gw: Gateway) -> None:
    answer = gw.client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.choices[0].message.role == "assistant"
    assert answer.model == "a-model"
    assert gw.upstream.requests[-1].path == "/v1/chat/completions"


def test_chat_stream_sync(gw: Gateway) -> None:
    stream = gw.client.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello there"
    assert len({c.id for c in chunks}) == 1


def test_embeddings_sync(gw: Gateway) -> None:
    answer = gw.client.embeddings.create(model="m", input=["a", "b"])
    assert answer.object == "list"
    assert [d.index for d in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) == 8
    assert answer.model == "a-model"
    assert gw.upstream.requests[-1].path == "/v1/embeddings"


def test_models_sync(gw: Gateway) -> None:
    listed = gw.client.models.list()
    assert [m.id for m in listed] == ["m", "org/model"]
    assert all(m.object == "model" for m in listed)
    one = gw.client.models.retrieve("m")
    assert (one.id, one.object, one.owned_by) == ("m", "model", "turnout")
    assert isinstance(one.created, int)
    assert not gw.upstream.requests  # the catalog is Turnout's own


@pytest.mark.parametrize("path", ["/v1/models/org/model", "/v1/models/org%2Fmodel"])
def test_model_id_with_a_slash(gw: Gateway, path: str) -> None:
    assert gw.client.models.retrieve("org/model").id == "org/model"
    response = gw.http.get(path)
    assert response.status_code == 200
    assert response.json() == {
        "id": "org/model",
        "object": "model",
        "created": response.json()["created"],
        "owned_by": "turnout",
    }


def test_model_with_a_slash_serves_requests(gw: Gateway) -> None:
    raw = gw.client.chat.completions.with_raw_response.create(model="org/model", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.parse().model == "vendor/a-model-2"
    assert_answered_by(raw.headers, "a/vendor/a-model-2", "org/model", 1)
    assert gw.upstream.requests[-1].json["model"] == "vendor/a-model-2"


def test_health_probes(gw: Gateway) -> None:
    live = gw.http.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = gw.http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "providers": 1}


# ---------------------------------------------------------------------------------------------
# The endpoints, async SDK
# ---------------------------------------------------------------------------------------------


async def test_completions_async(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        answer = await client.completions.create(model="m", prompt="say hi")
        assert answer.choices[0].text == "echo: say hi"
        stream = await client.completions.create(model="m", prompt="say hi", stream=True)
        assert "".join([c.choices[0].text async for c in stream]) == "echo: say hi"


async def test_chat_async(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        answer = await client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "echo: hello there"
        stream = await client.chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "echo: hello there"
        )
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None


async def test_embeddings_async(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        answer = await client.embeddings.create(model="m", input="vector")
        floats = await client.embeddings.create(model="m", input="vector", encoding_format="float")
        assert answer.data[0].embedding == floats.data[0].embedding
        assert len(answer.data[0].embedding) == 8


async def test_models_async(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        assert [m.id async for m in client.models.list()] == ["m", "org/model"]
        assert (await client.models.retrieve("org/model")).id == "org/model"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("ghost")


async def test_async_raw_response_carries_accounting_headers(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert_answered_by(raw.headers, "a/a-model", "m", 1)


async def test_async_concurrent_requests_get_their_own_request_ids(gw: Gateway) -> None:
    async with gw.turnout.async_client() as client:
        raws = await asyncio.gather(
            *(
                client.completions.with_raw_response.create(model="m", prompt=f"p{i}")
                for i in range(8)
            )
        )
    texts = sorted(r.parse().choices[0].text for r in raws)
    assert texts == sorted(f"echo: p{i}" for i in range(8))
    assert len({r.headers["x-request-id"] for r in raws}) == 8


# ---------------------------------------------------------------------------------------------
# Accounting headers
# ---------------------------------------------------------------------------------------------


def test_every_inference_endpoint_answers_with_accounting_headers(gw: Gateway) -> None:
    raws = [
        gw.client.completions.with_raw_response.create(model="m", prompt="x"),
        gw.client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES),  # type: ignore[arg-type]
        gw.client.embeddings.with_raw_response.create(model="m", input="x"),
    ]
    for raw in raws:
        assert_answered_by(raw.headers, "a/a-model", "m", 1)
        assert raw.headers["x-request-id"].startswith("req_")
    assert len({raw.headers["x-request-id"] for raw in raws}) == 3


def test_streams_carry_accounting_headers(gw: Gateway) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with gw.http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"x-request-id": "stream-1"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["x-client-request-id"] == "stream-1"
        assert_answered_by(response.headers, "a/a-model", "m", 1)
        text = response.read().decode()
    assert text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("endpoint", ["completions", "chat", "embeddings"])
def test_a_client_request_id_is_kept_beside_turnouts_own(gw: Gateway, endpoint: str) -> None:
    wanted = f"client-trace-{endpoint}-0001"
    headers = {"x-request-id": wanted}
    if endpoint == "completions":
        raw: Any = gw.client.completions.with_raw_response.create(
            model="m", prompt="x", extra_headers=headers
        )
    elif endpoint == "chat":
        raw = gw.client.chat.completions.with_raw_response.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers=headers,
        )
    else:
        raw = gw.client.embeddings.with_raw_response.create(
            model="m", input="x", extra_headers=headers
        )
    assert raw.headers["x-client-request-id"] == wanted
    assert raw.headers["x-request-id"].startswith("req_")


def test_a_client_request_id_never_becomes_the_request_id(
    gw: Gateway, request_log: RequestLog
) -> None:
    """Two clients (or one, twice) sending the same id still get two ids, two log lines."""
    sent = {"x-request-id": "same-id"}
    body = {"model": "m", "prompt": "x"}
    ids = [gw.http.post("/v1/completions", json=body, headers=sent).headers for _ in range(2)]
    assert ids[0]["x-request-id"] != ids[1]["x-request-id"]
    for headers in ids:
        assert headers["x-client-request-id"] == "same-id"
        assert line_for(request_log, headers["x-request-id"])["client_request_id"] == "same-id"


@pytest.mark.parametrize(
    "sent", ["x" * 500, "two words", "new\\nline", "ключ", 'quote"d', ""], ids=repr
)
def test_an_unsafe_client_request_id_is_not_echoed(
    gw: Gateway, request_log: RequestLog, sent: str
) -> None:
    raw = sent.encode()
    response = gw.http.post(
        "/v1/completions", json={"model": "m", "prompt": "x"}, headers=[(b"x-request-id", raw)]
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    assert "x-client-request-id" not in response.headers
    assert line_for(request_log, response.headers["x-request-id"])["client_request_id"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'{"model": "ghost", "prompt": "x"}', 404),
        (b'{"model": "m", "prompt": "x", "temperature": 9}', 400),
        (b'{"model": "m", "prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}', 413),
    ],
    ids=["bad-json", "unknown-model", "invalid-value", "too-large"],
)
def test_rejections_carry_the_request_id(gw: Gateway, body: bytes, status: int) -> None:
    echoed = gw.http.post("/v1/completions", content=body, headers={"x-request-id": "rej-1"})
    assert echoed.status_code == status
    assert echoed.headers["x-client-request-id"] == "rej-1"
    assert echoed.headers["x-request-id"].startswith("req_")
    fresh = gw.http.post("/v1/completions", content=body)
    assert fresh.status_code == status
    assert fresh.headers["x-request-id"].startswith("req_")


def test_upstream_errors_carry_request_id_and_attempts(gw: Gateway) -> None:
    gw.upstream.set_default(Status(500))
    response = gw.http.post(
        "/v1/completions", json={"model": "m", "prompt": "x"}, headers={"x-request-id": "up-1"}
    )
    assert response.status_code == 500
    assert response.headers["x-client-request-id"] == "up-1"
    assert response.headers["x-turnout-attempts"] == "3"


def test_upstream_errors_say_which_deployment_answered(gw: Gateway) -> None:
    gw.upstream.set_default(Status(400, message="bad temperature", param="temperature"))
    response = gw.http.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert response.status_code == 400
    assert_answered_by(response.headers, "a/a-model", "m", 1)


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/m", "/v1/models/ghost"])
def test_model_catalog_answers_carry_a_request_id(gw: Gateway, path: str) -> None:
    response = gw.http.get(path, headers={"x-request-id": "cat-1"})
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers.get("x-client-request-id") == "cat-1"


def test_rejections_say_no_attempt_was_made(gw: Gateway) -> None:
    response = gw.http.post("/v1/completions", json={"model": "ghost", "prompt": "x"})
    assert response.status_code == 404
    assert response.headers.get("x-turnout-attempts") == "0"


def test_failover_headers_name_the_deployment_that_answered(
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    turnout: Callable[[dict[str, Any]], RunningTurnout],
    request_log: RequestLog,
) -> None:
    t = turnout(simple_config({"a": upstream.base_url, "b": upstream_b.base_url}))
    upstream.set_default(Status(500))
    with t.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert_answered_by(raw.headers, "b/b-model", "m", 4)
    assert raw.parse().model == "b-model"
    line = line_for(request_log, raw.headers["x-request-id"])
    assert line["deployment"] == "b/b-model"
    assert [(a["deployment"], a["outcome"]) for a in line["attempts"]] == [
        ("a/a-model", "500 server_error"),
        ("a/a-model", "500 server_error"),
        ("a/a-model", "500 server_error"),
        ("b/b-model", "ok"),
    ]


def test_fallback_model_headers_name_the_model_reached(
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    turnout: Callable[[dict[str, Any]], RunningTurnout],
) -> None:
    models = {
        "m": {"deployments": [{"provider": "a", "model": "a-model"}], "fallbacks": ["backup"]},
        "backup": {"deployments": [{"provider": "b", "model": "b-model"}]},
    }
    t = turnout(simple_config({"a": upstream.base_url, "b": upstream_b.base_url}, models=models))
    upstream.set_default(Status(403))
    with t.client() as client:
        raw = client.completions.with_raw_response.create(model="m", prompt="x")
    assert_answered_by(raw.headers, "b/b-model", "backup", 2)
    assert raw.parse().model == "b-model"
    assert upstream_b.requests[-1].json["model"] == "b-model"


# ---------------------------------------------------------------------------------------------
# The request log
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["completions", "chat", "embeddings"])
def test_one_log_line_per_successful_request(
    gw: Gateway, request_log: RequestLog, endpoint: str
) -> None:
    if endpoint == "completions":
        raw: Any = gw.client.completions.with_raw_response.create(model="m", prompt="a b c")
    elif endpoint == "chat":
        raw = gw.client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    else:
        raw = gw.client.embeddings.with_raw_response.create(model="m", input="a b c")
    answer = raw.parse()
    line = line_for(request_log, raw.headers["x-request-id"])
    assert line["model"] == "m"
    assert line["deployment"] == "a/a-model"
    assert line["status"] == 200
    assert line["stream"] is False
    assert isinstance(line["latency_ms"], int | float)
    assert line["latency_ms"] >= 0
    assert len(line["attempts"]) == 1
    assert line["attempts"][0]["deployment"] == "a/a-model"
    assert line["attempts"][0]["outcome"] == "ok"
    assert line["usage"] == answer.usage.model_dump(exclude_none=True)
    assert len(request_log()) == 1


def test_log_line_for_an_upstream_failure_lists_every_attempt(
    gw: Gateway, request_log: RequestLog
) -> None:
    gw.upstream.set_default(Status(503))
    response = gw.http.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert response.status_code == 503
    line = line_for(request_log, response.headers["x-request-id"])
    assert line["status"] == 503
    assert line["model"] == "m"
    assert line["usage"] is None
    assert [a["outcome"] for a in line["attempts"]] == ["503 server_error"] * 3
    assert all(a["deployment"] == "a/a-model" for a in line["attempts"])


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{", 400), (b'{"model": "ghost", "prompt": "x"}', 404), (b'{"model": "m"}', 400)],
)
def test_log_line_for_a_rejected_request(
    gw: Gateway, request_log: RequestLog, body: bytes, status: int
) -> None:
    response = gw.http.post("/v1/completions", content=body, headers={"x-request-id": "rej-log"})
    assert response.status_code == status
    line = line_for(request_log, response.headers["x-request-id"])
    assert line["client_request_id"] == "rej-log"
    assert line["status"] == status
    assert line["attempts"] == []
    assert line["deployment"] is None
    assert line["usage"] is None


def test_log_line_for_a_stream_is_written_once_at_its_end(
    gw: Gateway, request_log: RequestLog
) -> None:
    stream = gw.client.chat.completions.create(
        model="m",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_headers={"x-request-id": "stream-log"},
    )
    chunks = list(stream)
    assert chunks
    line = line_for(request_log, "stream-log")
    assert line["status"] == 200
    assert line["stream"] is True
    assert line["deployment"] == "a/a-model"
    assert [a["outcome"] for a in line["attempts"]] == ["ok"]


def test_log_line_for_a_stream_with_usage_records_it(gw: Gateway, request_log: RequestLog) -> None:
    stream = gw.client.chat.completions.create(
        model="m",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": "stream-usage"},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1
    line = line_for(request_log, "stream-usage")
    assert line["usage"] == usage[0].model_dump(exclude_none=True)
