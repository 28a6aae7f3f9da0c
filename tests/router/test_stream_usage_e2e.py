"""A stream's usage, end to end: Turnout always knows it (the limits settle on it), the
client sees it only when it asked, and a stream that ends without `[DONE]` counts as whole
only once every choice finished and the usage that was asked for came."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from policies.token_estimate import estimate_tokens
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]  # the fake answers "echo: hi there"


def events(server: RunningTurnout, body: dict[str, Any]) -> list[str]:
    """The `data:` payloads of a streamed chat completion, as Turnout framed them."""
    with (
        server.http() as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        return [
            line.removeprefix("data: ")
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]


def test_a_stream_asks_upstream_for_usage_the_client_never_sees(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"a": upstream.base_url}))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    payloads = events(server, body)
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    assert not any("usage" in c for c in chunks)
    with server.client() as client:
        seen = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.choices and c.usage is None for c in seen)


def test_a_client_that_asked_gets_the_usage_chunk(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"a": upstream.base_url}))
    with server.client() as client:
        seen = list(
            client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert seen[-1].choices == []
    assert seen[-1].usage is not None
    assert seen[-1].usage.total_tokens == 5  # "hi there" 2, "echo: hi there" 3


def remaining_after(server: RunningTurnout) -> int:
    """The tokens left once the stream before settled (a 1-token request's view)."""
    time.sleep(0.1)  # settled just after [DONE] left
    with server.client("sk-a") as client:
        after = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=1
        )
    return int(after.headers["x-ratelimit-remaining-tokens"])


def stream_unasked(server: RunningTurnout) -> None:
    with server.client("sk-a") as client:
        chunks = list(
            client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=60, stream=True)
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hi there"


def test_a_stream_without_include_usage_is_settled_on_its_usage(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = simple_config({"a": upstream.base_url}, keys=[{"key": "sk-a", "limits": {"tpm": 100}}])
    server = turnout(config, ManualClock())
    stream_unasked(server)
    small = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 1})
    # The upstream's count (5), not the 63-token estimate left standing.
    assert remaining_after(server) == 100 - 5 - small


def test_a_stream_with_no_usage_anywhere_is_settled_on_an_estimate(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = simple_config({"a": upstream.base_url}, keys=[{"key": "sk-a", "limits": {"tpm": 100}}])
    config["providers"]["a"]["capabilities"] = {"stream_options": False}
    server = turnout(config, ManualClock())
    stream_unasked(server)
    assert "stream_options" not in upstream.requests[0].json  # it cannot take them
    small = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 1})
    # Prompt: 12 characters, 3 tokens; completion: "echo: hi there", 14 characters, 4.
    assert remaining_after(server) == 100 - 7 - small


# ---- a stream that ends without [DONE] --------------------------------------------------


def chat_stream(server: RunningTurnout, **kwargs: Any) -> tuple[list[Any], Exception | None]:
    chunks: list[Any] = []
    with server.client() as client:
        try:
            for chunk in client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, **kwargs
            ):
                chunks.append(chunk)
        except openai.APIError as exc:
            return chunks, exc
    return chunks, None


def test_n_choices_without_done_are_whole_only_once_each_finished(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    # n=2: per index a role chunk, 3 pieces and a finish chunk; then the usage chunk.
    upstream.enqueue(Ok(end_after=5), Ok(end_after=10), Ok(end_after=11))
    server = turnout(simple_config({"a": upstream.base_url}))
    chunks, error = chat_stream(server, n=2)  # index 1 never finished
    assert isinstance(error, openai.APIError)
    assert [c.choices[0].index for c in chunks if c.choices] == [0] * 5
    _, error = chat_stream(server, n=2)  # both finished, but the usage asked for never came
    assert isinstance(error, openai.APIError)
    chunks, error = chat_stream(server, n=2)  # everything it owed: a clean end
    assert error is None
    ends = [(c.index, c.finish_reason) for ch in chunks for c in ch.choices if c.finish_reason]
    assert ends == [(0, "stop"), (1, "stop")]


def test_a_cut_short_stream_ends_with_an_error_event(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(end_after=7))
    server = turnout(simple_config({"a": upstream.base_url}))
    payloads = events(server, {"model": "m", "messages": MESSAGES, "stream": True, "n": 2})
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert "1 of 2 choice(s) finished" in error["message"]


@pytest.mark.parametrize("asked", [True, False])
def test_one_choice_and_its_usage_without_done_is_whole(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, asked: bool
) -> None:
    upstream.enqueue(Ok(no_done=True))
    server = turnout(simple_config({"a": upstream.base_url}))
    options = {"stream_options": {"include_usage": True}} if asked else {}
    chunks, error = chat_stream(server, **options)
    assert error is None
    assert (chunks[-1].usage is not None) is asked


def test_usage_nobody_asked_for_is_counted_with_the_declared_tokenizer(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    tokenizer = smollm2_tokenizer()  # skips when the packaged model is absent
    config = simple_config(
        {"a": upstream.base_url}, keys=[{"key": "sk-a", "limits": {"tpm": 1000}}]
    )
    deployment = config["models"]["m"]["deployments"][0]
    deployment.update(capabilities={"stream_options": False}, tokenizer="smollm2-135m-instruct")
    server = turnout(config, ManualClock())
    stream_unasked(server)
    assert "stream_options" not in upstream.requests[0].json  # it cannot take them
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    counted = len(tokenizer.encode(rendered)) + len(tokenizer.encode("echo: hi there"))
    small = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 1})
    assert remaining_after(server) == 1000 - counted - small
