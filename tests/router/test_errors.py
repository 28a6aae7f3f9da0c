"""Every error Turnout answers is OpenAI's envelope, with the status and SDK exception a
client expects: Turnout's own rejections (bad JSON, auth, unknown model, body too large)
and upstream errors relayed through it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, MalformedEvent, Status, rate_limited
from tests.turnout_server import RunningTurnout, simple_config

LIMIT = 4096
GOOD_KEY = "sk-team-good-0123456789"
PATHS = ["/v1/completions", "/v1/chat/completions", "/v1/embeddings"]
VALID: dict[str, dict[str, Any]] = {
    "/v1/completions": {"prompt": "hi"},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"input": "hi"},
}


@dataclass
class Gateway:
    upstream: FakeOpenAIUpstream
    turnout: RunningTurnout
    http: httpx.Client


def _gateway(**overrides: Any) -> Iterator[Gateway]:
    with FakeOpenAIUpstream() as up:
        config = simple_config({"a": up.base_url}, server={"max_body_bytes": LIMIT}, **overrides)
        turnout = RunningTurnout(config).start()
        try:
            with turnout.http() as http:
                yield Gateway(up, turnout, http)
        finally:
            turnout.stop()


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    yield from _gateway()


@pytest.fixture(scope="module")
def keyed() -> Iterator[Gateway]:
    yield from _gateway(keys=[{"key": GOOD_KEY}, {"key": "sk-second-key-abcdef", "name": "ops"}])


@pytest.fixture(autouse=True)
def _fresh_upstreams(request: pytest.FixtureRequest) -> None:
    for name in ("gw", "keyed"):
        if name in request.fixturenames:
            request.getfixturevalue(name).upstream.reset()


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object, checked to be OpenAI's envelope with all four keys."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return dict(error)


def sdk_error(exc: openai.APIStatusError, status: int) -> dict[str, Any]:
    error = envelope(exc.response, status)  # type: ignore[arg-type]
    assert exc.status_code == status
    assert exc.body == error
    assert exc.code == error["code"]
    assert exc.param == error["param"]
    assert exc.type == error["type"]
    return error


# ---------------------------------------------------------------------------------------------
# Bodies Turnout cannot use
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b'{"model": "m",}', b"{'model': 'm'}", b"\xff\xfe{}"],
    ids=["empty", "open-brace", "words", "trailing-comma", "single-quotes", "bad-utf8"],
)
def test_malformed_json_is_400(gw: Gateway, path: str, body: bytes) -> None:
    response = gw.http.post(path, content=body, headers={"content-type": "application/json"})
    error = envelope(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert "JSON" in error["message"]
    assert not gw.upstream.requests


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("body", [b"[]", b'[{"model": "m"}]', b'"m"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_400(gw: Gateway, path: str, body: bytes) -> None:
    error = envelope(gw.http.post(path, content=body), 400)
    assert error["type"] == "invalid_request_error"
    assert "object" in error["message"]
    assert not gw.upstream.requests


def test_deeply_nested_json_is_a_clean_400(gw: Gateway) -> None:
    body = b'{"model": "m", "prompt": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert len(body) < LIMIT
    envelope(gw.http.post("/v1/completions", content=body), 400)


@pytest.mark.parametrize("path", PATHS)
def test_missing_model_is_400_naming_model(gw: Gateway, path: str) -> None:
    error = envelope(gw.http.post(path, json=VALID[path]), 400)
    assert error["param"] == "model"
    assert error["code"] == "missing_required_parameter"
    assert not gw.upstream.requests


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("model", ["", 42, None, ["m"]], ids=repr)
def test_model_that_is_not_a_name_is_400_naming_model(gw: Gateway, path: str, model: Any) -> None:
    error = envelope(gw.http.post(path, json={**VALID[path], "model": model}), 400)
    assert error["param"] == "model"


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": f"Token {GOOD_KEY}"},
        {"authorization": f"Basic {GOOD_KEY}"},
        {"authorization": GOOD_KEY},
        {"authorization": "Bearer sk-team-good-0123456788"},
        {"authorization": f"Bearer {GOOD_KEY}x"},
        {"x-api-key": GOOD_KEY},
    ],
    ids=[
        "none",
        "empty",
        "no-key",
        "blank-key",
        "basic",
        "no-scheme",
        "near-miss",
        "longer",
        "x-api",
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_missing_or_wrong_key_is_401(keyed: Gateway, path: str, headers: dict[str, str]) -> None:
    body = {**VALID[path], "model": "m"}
    error = envelope(keyed.http.post(path, json=body, headers=headers), 401)
    assert error["type"] == "invalid_request_error"
    assert not keyed.upstream.requests


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/m"])
def test_model_listing_needs_a_key_too(keyed: Gateway, path: str) -> None:
    envelope(keyed.http.get(path), 401)
    envelope(keyed.http.get(path, headers={"authorization": "Bearer nope-nope-nope"}), 401)
    good = keyed.http.get(path, headers={"authorization": f"Bearer {GOOD_KEY}"})
    assert good.status_code == 200


def test_wrong_key_raises_authentication_error_and_is_not_echoed(keyed: Gateway) -> None:
    wrong = "sk-wrong-key-that-is-secret-42"
    with (
        keyed.turnout.client(api_key=wrong) as client,
        pytest.raises(openai.AuthenticationError) as exc,
    ):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    error = sdk_error(exc.value, 401)
    assert error["code"] == "invalid_api_key"
    assert wrong not in exc.value.response.text
    assert not keyed.upstream.requests


def test_every_configured_key_works(keyed: Gateway) -> None:
    for key in (GOOD_KEY, "sk-second-key-abcdef"):
        with keyed.turnout.client(api_key=key) as client:
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "echo: hi"
            assert [m.id for m in client.models.list()] == ["m"]
    assert len(keyed.upstream.requests) == 2
    # Turnout's key is its own: it is never passed on to the upstream.
    assert all(GOOD_KEY not in str(r.headers) for r in keyed.upstream.requests)


def test_bearer_scheme_is_case_insensitive(keyed: Gateway) -> None:
    response = keyed.http.post(
        "/v1/embeddings",
        json={"model": "m", "input": "x"},
        headers={"authorization": f"bearer {GOOD_KEY}"},
    )
    assert response.status_code == 200


def test_health_needs_no_key(keyed: Gateway) -> None:
    assert keyed.http.get("/health/live").status_code == 200
    assert keyed.http.get("/health/ready").status_code == 200


def test_key_is_checked_before_the_model_exists(keyed: Gateway) -> None:
    response = keyed.http.post("/v1/chat/completions", json={"model": "ghost", "messages": []})
    envelope(response, 401)


# ---------------------------------------------------------------------------------------------
# Unknown models and routes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_unknown_model_is_404_model_not_found(gw: Gateway, path: str) -> None:
    error = envelope(gw.http.post(path, json={**VALID[path], "model": "ghost-model"}), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "ghost-model" in error["message"]
    assert not gw.upstream.requests


def test_unknown_model_raises_not_found_in_the_sdk(gw: Gateway) -> None:
    with gw.turnout.client() as client:
        calls = [
            lambda: client.completions.create(model="ghost", prompt="hi"),
            lambda: client.chat.completions.create(
                model="ghost", messages=[{"role": "user", "content": "hi"}]
            ),
            lambda: client.embeddings.create(model="ghost", input="hi"),
            lambda: client.models.retrieve("ghost"),
        ]
        for attempt in calls:
            with pytest.raises(openai.NotFoundError) as exc:
                attempt()
            assert sdk_error(exc.value, 404)["code"] == "model_not_found"


@pytest.mark.parametrize("model", ["ghost", "org/ghost", "m/extra", "M"])
def test_retrieving_an_unknown_model_is_404(gw: Gateway, model: str) -> None:
    error = envelope(gw.http.get(f"/v1/models/{model}"), 404)
    assert error["code"] == "model_not_found"


def test_unknown_route_and_wrong_method_are_enveloped(gw: Gateway) -> None:
    error = envelope(gw.http.post("/v1/nothing-here", json={}), 404)
    assert error["type"] == "invalid_request_error"
    envelope(gw.http.get("/v1/chat/completions"), 405)
    envelope(gw.http.delete("/v1/models"), 405)


# ---------------------------------------------------------------------------------------------
# Body size
# ---------------------------------------------------------------------------------------------


def exact_body(size: int) -> bytes:
    head, tail = b'{"model": "m", "prompt": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_at_the_limit_is_accepted(gw: Gateway) -> None:
    body = exact_body(LIMIT)
    assert len(body) == LIMIT
    response = gw.http.post("/v1/completions", content=body)
    assert response.status_code == 200, response.text
    assert gw.upstream.requests[-1].json["prompt"] == "x" * (LIMIT - 28)


def test_body_over_the_limit_is_413(gw: Gateway) -> None:
    error = envelope(gw.http.post("/v1/completions", content=exact_body(LIMIT + 1)), 413)
    assert error["code"] == "request_too_large"
    assert str(LIMIT) in error["message"]
    assert not gw.upstream.requests


def test_body_over_the_limit_raises_in_the_sdk(gw: Gateway) -> None:
    with gw.turnout.client() as client, pytest.raises(openai.APIStatusError) as exc:
        client.completions.create(model="m", prompt="x" * (LIMIT * 4))
    assert sdk_error(exc.value, 413)["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "m", "prompt": "'
        for _ in range(3 * 1024):
            yield b"x" * 1024
        yield b'"}'

    response = gw.http.post("/v1/completions", content=body())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert envelope(response, 413)["code"] == "request_too_large"
    assert not gw.upstream.requests


def _read_response_head(sock: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_413_arrives_while_an_unbounded_chunked_body_is_still_open(gw: Gateway) -> None:
    """The body never ends: an answer at all proves Turnout stopped reading at the limit
    rather than buffering to the end."""
    with socket.create_connection(("127.0.0.1", gw.turnout.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: turnout\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * (LIMIT + 1)
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))  # no terminating 0-chunk
        head = _read_response_head(sock)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert not gw.upstream.requests


def test_413_arrives_before_a_declared_oversized_body_is_sent(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.turnout.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: turnout\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        )
        head = _read_response_head(sock)
    assert head.startswith(b"HTTP/1.1 413 ")


# ---------------------------------------------------------------------------------------------
# Upstream errors relayed
# ---------------------------------------------------------------------------------------------

UPSTREAM_ERRORS = [
    # status, type, code, param, SDK exception, attempts Turnout makes with one deployment
    (400, "invalid_request_error", "invalid_value", "temperature", openai.BadRequestError, 1),
    (401, "invalid_request_error", "invalid_api_key", None, openai.AuthenticationError, 1),
    (403, "permission_error", "unsupported_country", None, openai.PermissionDeniedError, 1),
    (404, "invalid_request_error", "model_not_found", None, openai.NotFoundError, 1),
    (422, "invalid_request_error", None, "messages", openai.UnprocessableEntityError, 1),
    (429, "requests", "rate_limit_exceeded", None, openai.RateLimitError, 3),
    (500, "server_error", None, None, openai.InternalServerError, 3),
    (503, "server_error", "overloaded", None, openai.InternalServerError, 3),
]


@pytest.mark.parametrize(
    ("status", "etype", "code", "param", "exc_class", "attempts"),
    UPSTREAM_ERRORS,
    ids=[str(e[0]) for e in UPSTREAM_ERRORS],
)
def test_upstream_error_keeps_status_type_code_message_through_turnout(
    gw: Gateway,
    status: int,
    etype: str,
    code: str | None,
    param: str | None,
    exc_class: type[openai.APIStatusError],
    attempts: int,
) -> None:
    message = f"upstream refused with {status}"
    gw.upstream.set_default(Status(status, type=etype, code_str=code, param=param, message=message))
    with gw.turnout.client() as client, pytest.raises(exc_class) as exc:
        client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    error = sdk_error(exc.value, status)
    assert type(exc.value) is exc_class
    assert error["type"] == etype
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"].startswith(message)
    assert len(gw.upstream.requests) == attempts
    assert exc.value.response.headers["x-turnout-attempts"] == str(attempts)


@pytest.mark.parametrize("status", [400, 429])
def test_upstream_error_before_a_stream_starts_keeps_its_status(gw: Gateway, status: int) -> None:
    gw.upstream.set_default(Status(status, message=f"no stream for you ({status})"))
    with gw.turnout.client() as client, pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    error = sdk_error(exc.value, status)
    assert error["message"].startswith(f"no stream for you ({status})")


def test_upstream_429_with_long_retry_after_is_relayed_with_it(gw: Gateway) -> None:
    gw.upstream.set_default(rate_limited(retry_after="120"))
    response = gw.http.post(
        "/v1/chat/completions", json={**VALID["/v1/chat/completions"], "model": "m"}
    )
    error = envelope(response, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "120"
    assert len(gw.upstream.requests) == 1  # past max_retry_after: not waited for


def test_upstream_error_without_envelope_still_gets_one(gw: Gateway) -> None:
    gw.upstream.set_default(Status(400, body=b"<html>Bad Request</html>"))
    response = gw.http.post("/v1/completions", json={"model": "m", "prompt": "hi"})
    error = envelope(response, 400)
    assert "Bad Request" in error["message"]


def test_upstream_answering_garbage_is_a_5xx_envelope(gw: Gateway) -> None:
    gw.upstream.set_default(MalformedEvent())
    with gw.turnout.client() as client, pytest.raises(openai.InternalServerError) as exc:
        client.completions.create(model="m", prompt="hi")
    error = sdk_error(exc.value, exc.value.status_code)
    assert exc.value.status_code >= 500
    assert "this is not json" not in json.dumps(error)
