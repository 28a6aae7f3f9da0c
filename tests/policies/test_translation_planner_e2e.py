"""Planner decisions on the wire, through a real Turnout and the official openai SDK against
a loopback upstream: greedy n where the backend refuses it, best_of equal to n and empty
values on backends without them, n with best_of on a backend without n, and the usage of a
stream cut at an emulated stop string (counted, or honestly missing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "alpha beta"}]
STRICT = {"router": {"translation": "strict"}}
LONG = " ".join(f"w{i}" for i in range(60))  # streamed "w0", " w1", " w2", ...


def lacking(upstream: FakeOpenAIUpstream, **declared: Any) -> dict[str, Any]:
    config = simple_config({"up": upstream.base_url})
    config["models"]["m"]["deployments"][0].update(declared)
    return config


def posted(upstream: FakeOpenAIUpstream) -> list[dict[str, Any]]:
    return [r.json for r in upstream.requests if r.method == "POST"]


def test_greedy_n_is_fanned_out_where_the_backend_refuses_it(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(lacking(upstream, capabilities={"greedy_n": False}))
    with server.client() as client:
        greedy = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, n=3, temperature=0
        )
        sampled = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, n=3, temperature=0.8
        )
    assert greedy.headers["x-turnout-emulated"] == "n"
    assert [c.index for c in greedy.parse().choices] == [0, 1, 2]
    assert "x-turnout-emulated" not in sampled.headers
    assert [b["n"] for b in posted(upstream)] == [1, 1, 1, 3]


def test_values_that_change_nothing_are_not_sent_where_the_option_is_missing(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    capabilities = {"best_of": False, "stop": False, "logit_bias": False}
    server = turnout(lacking(upstream, capabilities=capabilities))
    with server.client() as client:
        completion = client.completions.with_raw_response.create(
            model="m", prompt="alpha", n=2, best_of=2, extra_body=STRICT
        )
        chat = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, stop=[], logit_bias={}, extra_body=STRICT
        )
    assert len(completion.parse().choices) == 2
    assert chat.parse().choices[0].message.content == "echo: alpha beta"
    sent_completion, sent_chat = posted(upstream)
    assert "best_of" not in sent_completion
    assert sent_completion["n"] == 2
    assert "stop" not in sent_chat
    assert "logit_bias" not in sent_chat
    for reply in (completion, chat):  # a no-op removed: nothing to report
        assert not {"x-turnout-emulated", "x-turnout-dropped"} & set(reply.headers)


def test_n_with_best_of_on_a_backend_without_n_is_served_by_fanned_out_candidates(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(lacking(upstream, capabilities={"n": False, "best_of": False}))
    with server.client() as client:
        reply = client.completions.with_raw_response.create(
            model="m", prompt="alpha", n=2, best_of=3, seed=5
        )
    assert reply.headers["x-turnout-emulated"] == "n, best_of"
    assert [c.index for c in reply.parse().choices] == [0, 1]
    sent = posted(upstream)
    assert sorted(b["seed"] for b in sent) == [5, 6, 7]
    assert {(b["n"], b["logprobs"]) for b in sent} == {(1, 0)}
    assert not any("best_of" in b for b in sent)


def cut_stream(server: RunningTurnout) -> tuple[Any, list[Any]]:
    with server.client() as client:
        reply = client.chat.completions.with_raw_response.create(
            model="m",
            messages=MESSAGES,
            stop=[" w3 "],
            stream=True,
            stream_options={"include_usage": True},
        )
        return reply, list(reply.parse())


def test_a_stream_cut_at_an_emulated_stop_has_no_made_up_usage(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=LONG, chunk_delay=0.01))
    reply, chunks = cut_stream(turnout(lacking(upstream, capabilities={"stop": False})))
    assert reply.headers["x-turnout-emulated"] == "stop"
    assert reply.headers["x-turnout-dropped"] == "stream_options.include_usage"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2"
    assert all(c.choices and c.usage is None for c in chunks)  # none invented


def test_a_stream_cut_at_an_emulated_stop_is_counted_with_the_declared_tokenizer(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    tokenizer = smollm2_tokenizer()  # skips when the packaged model is absent
    upstream.set_default(Ok(text=LONG, chunk_delay=0.01))
    config = lacking(upstream, capabilities={"stop": False}, tokenizer="smollm2-135m-instruct")
    reply, chunks = cut_stream(turnout(config))
    assert "x-turnout-dropped" not in reply.headers
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    assert usage.prompt_tokens == len(tokenizer.encode(rendered))
    # Everything read before the upstream was closed: up to the piece completing the stop.
    assert usage.completion_tokens == len(tokenizer.encode("w0 w1 w2 w3 w4"))
