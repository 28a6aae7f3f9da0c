"""Secrets in the spellings careless upstreams use, end to end: a real `turnout serve`
(its JSON log lines on stderr, read back from a file) in front of fakes that echo the
configured key lower-cased, upper-cased, in base64, percent- and HTML-escaped, partly
masked, and inside an error's `type`, `code` and `param`. Neither the client nor the log
may carry any of them. Also: a health check's failure log, a rejected reload's log line,
a 200 whose body breaks OpenAI's schema, and `/health/ready` for the public and for admins."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.anthropic_upstream import MidStreamError as AnthropicMidStreamError
from tests.fakes.openai_upstream import EchoInChoices, EchoVariants, FakeOpenAIUpstream
from tests.router.test_reload import wait_for, write
from tests.test_cli import COMMANDS, REPO, clean_env, free_port
from tests.turnout_server import simple_config

KEY = "upk-Alpha7Bravo9Charlie"  # no token shape: only the configured secret can mask it
ORG = "orgtok-Delta4Echo"
ANTHROPIC_KEY = "ant-Golf5Hotel8India"
ADMIN_KEY = "tk-admin-Kilo3Lima"
NEW_SECRET = "zulu9-Yankee8-Xray7"  # only ever in a rejected config
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def spellings(secret: str) -> list[str]:
    """What the fakes write: each must be gone wherever it could have appeared."""
    punct = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in secret)
    entity = "".join(c if c.isalnum() else f"&#{ord(c)};" for c in secret)
    return [
        secret,
        secret.lower(),
        secret.upper(),
        b64(secret).rstrip("="),
        b64("u:" + secret)[4:].rstrip("="),  # past what `u:` alone decides
        b64("Bearer " + secret)[12:].rstrip("="),
        punct,
        entity,
        f"{secret[:6]}****",
    ]


FORBIDDEN = [*spellings(KEY), *spellings(ORG), *spellings(ANTHROPIC_KEY), ADMIN_KEY, NEW_SECRET]


def assert_clean(text: str) -> None:
    for spelling in FORBIDDEN:
        assert spelling not in text, spelling


class Served:
    """`turnout serve` in a subprocess, its stderr (the JSON log) in a file."""

    def __init__(
        self,
        tmp: Path,
        openai_up: FakeOpenAIUpstream,
        claude: FakeAnthropicUpstream,
        checked_up: FakeOpenAIUpstream,
    ) -> None:
        self.path, self.log = tmp / "turnout.yaml", tmp / "stderr.log"
        self.openai_up, self.claude, self.checked_up = openai_up, claude, checked_up
        write(self.path, self.config())
        self.port = free_port()
        with self.log.open("wb") as stderr:
            args = ["serve", "--config", str(self.path), "--port", str(self.port)]
            self.proc = subprocess.Popen(
                [*COMMANDS["module"], *args, "--server", "uvicorn"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=clean_env(),
                cwd=REPO,
            )
        with httpx.Client(base_url=self.url, timeout=5) as client:
            wait_for(lambda: self._ready(client), timeout=30)

    def config(self, **extra: Any) -> dict[str, Any]:
        checked = {
            "kind": "openai",
            "base_url": self.checked_up.base_url,
            "api_key": KEY,
            "headers": {"x-org": ORG},
            "health_check": {"interval": 0.2, "timeout": 2},
        }
        providers = {
            "a": {"kind": "openai", "base_url": self.openai_up.base_url, "api_key": KEY},
            "org": {
                "kind": "openai",
                "base_url": self.openai_up.base_url,
                "headers": {"x-org": ORG},
            },
            "checked": checked,
            "claude": {
                "kind": "anthropic",
                "base_url": self.claude.base_url,
                "api_key": ANTHROPIC_KEY,
            },
        }
        models = {
            name: {"deployments": [{"provider": name, "model": f"{name}-model"}]}
            for name in providers
        }
        config = simple_config(
            {}, providers=providers, models=models, keys=[{"key": ADMIN_KEY, "admin": True}]
        )
        config["retry"] = {"attempts": 1}
        return {**config, **extra}

    @staticmethod
    def _ready(client: httpx.Client) -> bool:
        try:
            return client.get("/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=ADMIN_KEY, max_retries=0)

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_bytes().splitlines():
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with (
        FakeOpenAIUpstream() as openai_up,
        FakeAnthropicUpstream() as claude,
        FakeOpenAIUpstream() as checked_up,
    ):
        checked_up.set_models_behavior(EchoVariants(401))  # every health check fails
        running = Served(tmp_path_factory.mktemp("served"), openai_up, claude, checked_up)
        try:
            yield running
        finally:
            running.stop()
            # The log as a whole: no line, of any event, carries any spelling.
            assert_clean(running.log.read_text(errors="replace"))


def failed(served: Served, model: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught, served.client() as client:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert_clean(caught.value.response.text)
    return caught.value


@pytest.mark.parametrize("model", ["a", "org"])
def test_every_spelling_of_a_secret_is_masked_for_the_client_and_in_the_log(
    served: Served, model: str
) -> None:
    served.openai_up.enqueue(EchoVariants(400))
    raised = failed(served, model)
    error = raised.response.json()["error"]
    assert raised.status_code == 400
    assert "[redacted]" in error["message"]
    # `type`, `code` and `param` that carried a secret are dropped (the type then says
    # only "client error"); each provider sends one of the two secrets, so the other
    # field carries the fake's harmless "none".
    expected = {
        "a": ("invalid_request_error", "code-none", None),
        "org": ("type_none", None, None),
    }
    assert (error["type"], error["code"], error["param"]) == expected[model]
    wait_for(lambda: any(line.get("model") == model for line in served.events("request")))
    assert_clean(served.log.read_text(errors="replace"))


def test_an_anthropic_stream_error_echoing_the_key_lower_cased_is_masked(served: Served) -> None:
    served.claude.enqueue(AnthropicMidStreamError(after_events=4, echo_headers=True))
    with (
        served.client() as client,
        client.chat.completions.with_streaming_response.create(
            model="claude", messages=MESSAGES, stream=True
        ) as response,
    ):
        raw = response.read().decode()
    assert "lower=[redacted]" in raw
    assert_clean(raw)


def test_a_200_whose_choices_is_no_list_is_a_protocol_error(served: Served) -> None:
    served.openai_up.enqueue(EchoInChoices())
    raised = failed(served, "a")
    assert raised.status_code == 502
    assert raised.response.json()["error"]["type"] == "upstream_protocol_error"


def test_a_failed_health_check_logs_the_upstreams_code_masked(served: Served) -> None:
    [failure] = wait_for(lambda: served.events("health_check_failed"))
    assert failure["provider"] == "checked"
    assert failure["error"].startswith("401 ")
    assert_clean(orjson.dumps(failure).decode())


def test_a_rejected_reload_never_logs_a_misspelt_keys_value(served: Served) -> None:
    bad = served.config()
    bad["keys"] = [{"key": ADMIN_KEY, "admin": True, "extra": ADMIN_KEY}]
    bad["providers"]["a"]["apikey"] = NEW_SECRET
    write(served.path, bad)
    [rejected] = wait_for(lambda: served.events("config_reload_rejected"))
    assert "keys[0].extra" in rejected["error"]
    assert "providers.a.apikey" in rejected["error"]
    assert_clean(orjson.dumps(rejected).decode())
    write(served.path, served.config())
