"""The three hot OpenAI doors answer a POST before Litestar's router (router/hot_app.py);
the same paths spelled with a trailing slash, and every other method, take Litestar's way
to the same handlers. Both ways must answer alike: the same status, headers and body for
an answer, a stream, a rejection; 405 and OPTIONS as Litestar answers them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEY = "sk-hot-doors-0123456789"
BODIES: dict[str, dict[str, Any]] = {
    "/v1/completions": {"model": "m", "prompt": "hi"},
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/embeddings": {"model": "m", "input": "hi"},
}
# Headers that differ between any two requests, whichever way they came.
_PER_REQUEST = {"x-request-id", "date"}


@dataclass
class Served:
    upstream: FakeOpenAIUpstream
    http: httpx.Client


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with FakeOpenAIUpstream() as up:
        turnout = RunningTurnout(simple_config({"a": up.base_url}, keys=[{"key": KEY}])).start()
        try:
            with turnout.http(headers={"authorization": f"Bearer {KEY}"}) as http:
                yield Served(up, http)
        finally:
            turnout.stop()


def _shape(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in _PER_REQUEST}
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        for volatile in ("id", "created"):
            body.pop(volatile, None) if isinstance(body, dict) else None
        return response.status_code, headers, body
    return response.status_code, headers, response.text.count("data: ")


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize(
    "change",
    [
        {},  # answered
        {"model": None},  # 400, naming `model`
        {"model": "no-such-model"},  # 404
        {"temperature": "hot"},  # 400, naming `temperature`
    ],
)
def test_hot_and_routed_ways_answer_alike(
    served: Served, path: str, change: dict[str, Any]
) -> None:
    body = {**BODIES[path], **change}
    body = {k: v for k, v in body.items() if v is not None}
    hot = served.http.post(path, json=body)
    routed = served.http.post(path + "/", json=body)
    assert _shape(hot) == _shape(routed)
    if hot.status_code != 500:  # a bug's 500 comes from the app's last handler, with no id
        assert hot.headers["x-request-id"] != routed.headers["x-request-id"]


def test_a_stream_is_relayed_alike_both_ways(served: Served) -> None:
    body = {**BODIES["/v1/chat/completions"], "stream": True}
    hot = served.http.post("/v1/chat/completions", json=body)
    routed = served.http.post("/v1/chat/completions/", json=body)
    assert hot.status_code == routed.status_code == 200
    assert hot.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert _shape(hot) == _shape(routed)
    assert hot.text.rstrip().endswith("data: [DONE]")


def test_a_missing_key_is_401_both_ways(served: Served) -> None:
    for path in ("/v1/chat/completions", "/v1/chat/completions/"):
        response = served.http.post(
            path, json=BODIES["/v1/chat/completions"], headers={"authorization": ""}
        )
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", list(BODIES))
def test_other_methods_are_405_and_options_lists_post(served: Served, path: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = served.http.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST, OPTIONS"
        assert response.json()["error"]["message"] == "Method Not Allowed"
    options = served.http.options(path)
    assert options.status_code == 204
    assert options.headers["allow"] == "OPTIONS, POST"
