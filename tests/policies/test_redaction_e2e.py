"""Upstream errors reach clients masked, end to end: the official openai SDK talks to a real
Turnout on loopback, whose fake upstreams echo the credentials they were sent, dump request
headers and name their own host:port, or cannot be reached at all. The client must see
the status, type, code and param, but none of the configured secrets, no token-shaped
string and no upstream address; the log keeps what the upstream said, secrets masked."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import structlog

from tests.fakes.anthropic_upstream import AnthropicStatus, FakeAnthropicUpstream
from tests.fakes.anthropic_upstream import MidStreamError as AnthropicMidStreamError
from tests.fakes.openai_upstream import EchoHeaders, FakeOpenAIUpstream
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import RunningTurnout, simple_config

UPSTREAM_KEY = "sk-upstream-0123456789abcdef-SECRET"
HEADER_SECRET = "org-header-value-7f3a9c"
URL_PASSWORD = "pw-in-url-s3cret"
ANTHROPIC_KEY = "sk-ant-api03-configured-ANTHROPIC-key"
CLIENT_KEY = "turnout-client-key-5b1e"
SECRETS = (UPSTREAM_KEY, HEADER_SECRET, URL_PASSWORD, ANTHROPIC_KEY, CLIENT_KEY)
TOKEN_SHAPED = re.compile(r"\bsk-[\w-]+|\bBearer\s+\S+|\bBasic\s+[A-Za-z0-9+/=]{8,}", re.I)
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]


class Setup:
    """One Turnout for the module, and what it talks to."""

    def __init__(
        self, openai_up: FakeOpenAIUpstream, claude: FakeAnthropicUpstream, dead_port: int
    ) -> None:
        self.openai_up, self.claude, self.dead_port = openai_up, claude, dead_port
        url_with_credentials = openai_up.base_url.replace("://", f"://tester:{URL_PASSWORD}@")
        providers = {
            "a": {
                "kind": "openai",
                "base_url": openai_up.base_url,
                "api_key": UPSTREAM_KEY,
                "headers": {"x-org": HEADER_SECRET},
            },
            "basic": {"kind": "openai", "base_url": url_with_credentials},
            "dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{dead_port}/v1"},
            "claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": ANTHROPIC_KEY},
        }
        models = {
            "m": {"deployments": [{"provider": "a", "model": "a-model"}]},
            "basic": {"deployments": [{"provider": "basic", "model": "b-model"}]},
            "dead": {"deployments": [{"provider": "dead", "model": "dead-model"}]},
            "both": {
                "deployments": [
                    {"provider": "a", "model": "a-model"},
                    {"provider": "dead", "model": "dead-model"},
                ]
            },
            "claude": {"deployments": [{"provider": "claude", "model": "claude-haiku"}]},
        }
        config = simple_config(
            {},
            providers=providers,
            models=models,
            keys=[{"key": CLIENT_KEY}],
            retry={"attempts": 1, "backoff_initial": 0.01, "backoff_max": 0.05},
        )
        self.server = RunningTurnout(config).start()

    @property
    def addresses(self) -> list[str]:
        """Every upstream address, in the forms an error text might carry it."""
        found = []
        for port in (self.openai_up.port, self.claude.port, self.dead_port):
            found += [f"127.0.0.1:{port}", f"'127.0.0.1', {port}", f"localhost:{port}"]
        return found

    def assert_clean(self, text: str) -> None:
        """Nothing a client must not see is in `text`."""
        for secret in SECRETS:
            assert secret not in text
        assert TOKEN_SHAPED.search(text) is None, text
        for address in self.addresses:
            assert address not in text
        assert "127.0.0.1" not in text

    def client(self) -> openai.OpenAI:
        return self.server.client(api_key=CLIENT_KEY)


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with socket.socket() as sock:  # a loopback port nothing listens on: connects are refused
        sock.bind(("127.0.0.1", 0))
        dead_port = int(sock.getsockname()[1])
    with FakeOpenAIUpstream() as openai_up, FakeAnthropicUpstream() as claude:
        running = Setup(openai_up, claude, dead_port)
        try:
            yield running
        finally:
            running.server.stop()


@pytest.fixture(autouse=True)
def _fresh(setup: Setup) -> None:
    setup.openai_up.reset()


def failure(setup: Setup, model: str, **kwargs: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught, setup.client() as client:
        client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)
    setup.assert_clean(caught.value.response.text)
    return caught.value


def error_of(raised: openai.APIStatusError) -> dict[str, Any]:
    body = raised.response.json()["error"]
    assert isinstance(body, dict)
    return body


def test_a_401_echoing_the_bearer_key_keeps_its_fields_and_loses_the_key(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(401))
    raised = failure(setup, "m")
    error = error_of(raised)
    assert raised.status_code == 401
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert error["message"].startswith("Incorrect API key provided: [redacted].")
    assert "a/a-model" in error["message"]  # the address became the deployment's label
    sent = setup.openai_up.requests[-1].headers
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}"  # it really was echoed


def test_a_stream_that_fails_before_its_first_chunk_is_masked(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(401))
    raised = failure(setup, "m", stream=True)
    assert raised.status_code == 401
    assert error_of(raised)["code"] == "invalid_api_key"


def test_a_final_400_keeps_status_type_code_and_param(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(400, code_str="invalid_value", param="messages"))
    error = error_of(failure(setup, "m"))
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        "messages",
    )


def test_credentials_in_a_base_url_are_masked(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(401))
    failure(setup, "basic")
    assert setup.openai_up.requests[-1].headers["authorization"].startswith("Basic ")


def test_a_text_500_dumping_headers_is_masked(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(500, text=True))
    raised = failure(setup, "m")
    assert raised.status_code == 500
    assert error_of(raised)["type"] == "server_error"


def test_a_refused_connection_names_the_deployment_not_its_address(setup: Setup) -> None:
    raised = failure(setup, "dead")
    assert raised.status_code == 502
    error = error_of(raised)
    assert error["type"] == "upstream_connect_error"
    assert "dead/dead-model: connect" in error["message"]
    assert str(setup.dead_port) not in error["message"]


def test_all_attempts_failed_summary_is_masked_per_attempt(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(500, text=True))
    error = error_of(failure(setup, "both"))
    assert "all deployments failed after 2 attempt(s)" in error["message"]
    assert "a/a-model: 500" in error["message"]
    assert "dead/dead-model: connect" in error["message"]


def test_an_in_band_stream_error_event_is_masked(setup: Setup) -> None:
    setup.openai_up.enqueue(EchoHeaders(after_events=1))
    with (
        structlog.testing.capture_logs() as logs,
        setup.client() as client,
        client.chat.completions.with_streaming_response.create(
            model="m", messages=MESSAGES, stream=True
        ) as response,
    ):
        raw = response.read().decode()
    setup.assert_clean(raw)
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    error = events[-1]["error"]
    assert error["message"].startswith("Incorrect API key provided: [redacted].")
    assert error["type"] == "server_error"
    assert raw.rstrip().endswith("data: [DONE]")
    line = next(entry for entry in logs if entry.get("event") == "request")
    assert "Bearer [redacted]" in line["stream_error"]
    assert UPSTREAM_KEY not in json.dumps(line)


def test_anthropic_error_bodies_are_masked(setup: Setup) -> None:
    setup.claude.enqueue(
        AnthropicStatus(401, "authentication_error", "invalid x-api-key", echo_headers=True)
    )
    raised = failure(setup, "claude")
    assert raised.status_code == 401
    assert error_of(raised)["type"] == "authentication_error"
    assert setup.claude.requests[-1].headers["x-api-key"] == ANTHROPIC_KEY


def test_anthropic_stream_error_events_are_masked(setup: Setup) -> None:
    setup.claude.enqueue(AnthropicMidStreamError(after_events=4, echo_headers=True))
    with setup.client() as client:
        stream = client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
    assert isinstance(caught.value.body, dict)
    setup.assert_clean(json.dumps(caught.value.body))
    assert caught.value.body["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("behavior", "whole_body"),
    [
        (EchoHeaders(401), '"code":"invalid_api_key"'),
        (EchoHeaders(500, text=True), "Internal Server Error at http://127.0.0.1:"),
    ],
    ids=["json", "text"],
)
def test_the_log_keeps_the_upstream_answer_with_the_secrets_masked(
    setup: Setup, behavior: EchoHeaders, whole_body: str
) -> None:
    setup.openai_up.enqueue(behavior)
    with structlog.testing.capture_logs() as logs:
        failure(setup, "m")
    line = next(entry for entry in logs if entry.get("event") == "request")
    logged = json.dumps(line)
    for secret in SECRETS:
        assert secret not in logged
    # The operator still reads the upstream's whole answer, and where it came from.
    said = line["upstream"]
    assert whole_body in said
    assert "Incorrect API key provided: Bearer [redacted]" in said
    assert f"127.0.0.1:{setup.openai_up.port}" in said
    assert "x-org: [redacted]" in said


def test_a_reload_masks_the_new_configs_secrets(tmp_path: Path) -> None:
    """The secrets are the config's: a reload that changes a header value masks the new one
    (it is no token shape, so only the rebuilt redactor knows it)."""

    def config(up: FakeOpenAIUpstream, header: str) -> dict[str, Any]:
        provider = {"kind": "openai", "base_url": up.base_url, "headers": {"x-org": header}}
        return simple_config({"a": up.base_url}, providers={"a": provider}, retry={"attempts": 1})

    path = tmp_path / "turnout.yaml"
    with FakeOpenAIUpstream() as up:
        write(path, config(up, "first-header-value"))
        server = ReloadingTurnout(path)
        server.start()
        try:
            write(path, config(up, "second-header-value"))
            assert server.reload()
            up.enqueue(EchoHeaders(401))
            with pytest.raises(openai.APIStatusError) as caught, server.client() as client:
                client.chat.completions.create(model="m", messages=MESSAGES)
        finally:
            server.stop()
    assert up.requests[-1].headers["x-org"] == "second-header-value"
    assert "second-header-value" not in caught.value.response.text
    assert "x-org: [redacted]" in caught.value.response.text
