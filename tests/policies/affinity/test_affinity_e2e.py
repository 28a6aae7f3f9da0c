"""`strategy: affinity` through real Turnouts with the official SDK, over four fake OpenAI
upstreams on loopback: turns stay together, a shared system prompt goes where it went, a
failing deployment is routed around and the session follows, two Turnouts sharing Redis
share session pins, `prompt_cache_key` is set (or the client's kept), explain tells why."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ADMIN = "sk-admin"
NAMES = ("r0", "r1", "r2", "r3")
SYSTEM = "You answer questions about the shared tenant handbook. " * 6


@pytest.fixture
def pool() -> Iterator[dict[str, FakeOpenAIUpstream]]:
    fakes = {name: FakeOpenAIUpstream().start() for name in NAMES}
    yield fakes
    for fake in fakes.values():
        fake.stop()


def config(pool: dict[str, FakeOpenAIUpstream], **overrides: Any) -> dict[str, Any]:
    models = {
        "m": {
            "deployments": [{"provider": n, "model": "m"} for n in NAMES],
            "strategy": "affinity",
            "affinity": {"set_prompt_cache_key": True},
        }
    }
    options: dict[str, Any] = {"keys": [{"key": ADMIN, "admin": True}], "retry": {"attempts": 1}}
    options.update(overrides)
    return simple_config({n: f.base_url for n, f in pool.items()}, models, **options)


def conversation(turns: int, system: str = SYSTEM) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i}: " + "why? " * 12})
        if i < turns - 1:
            messages.append({"role": "assistant", "content": f"answer {i} " * 10})
    return messages


def send(server: RunningTurnout, messages: list[dict[str, str]], **extra: Any) -> str:
    with server.client(ADMIN) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="m",
            messages=messages,  # type: ignore[arg-type]
            **extra,
        )
    return str(raw.headers["x-turnout-deployment"]).split("/")[0]


def explain(server: RunningTurnout, request: dict[str, Any]) -> dict[str, Any]:
    with server.client(ADMIN) as client:
        answer = client.post("/router/explain", cast_to=object, body={"request": request})
    assert isinstance(answer, dict)
    return answer


def test_turns_stay_together_and_a_shared_system_prompt_goes_where_it_went(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream]
) -> None:
    server = turnout(config(pool))
    for c in range(4):
        system = f"Conversation {c} has its own instructions. " * 5
        homes = {send(server, conversation(t, system)) for t in range(1, 5)}
        assert len(homes) == 1
    home = send(server, conversation(1))
    for _ in range(5):  # other conversations under the same system prompt
        other = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": uuid.uuid4().hex},
        ]
        assert send(server, other) == home
    sent = pool[home].requests[-1].json
    assert str(sent["prompt_cache_key"]).startswith("turnout-")
    assert SYSTEM[:20] not in sent["prompt_cache_key"]
    # A streamed turn of the same conversation goes there too.
    with server.client(ADMIN) as client:
        stream = client.chat.completions.with_raw_response.create(
            model="m",
            messages=conversation(2),  # type: ignore[arg-type]
            stream=True,
        )
        assert stream.headers["x-turnout-deployment"] == f"{home}/m"
        assert list(stream.parse())
    # The client's own key is relayed as sent.
    send(server, conversation(1), extra_body={"prompt_cache_key": "client-key"})
    assert pool[home].requests[-1].json["prompt_cache_key"] == "client-key"


def test_a_failing_deployment_is_routed_around_and_the_session_follows(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream]
) -> None:
    server = turnout(config(pool, breaker={"failures": 1, "cooldown": 60}))
    home = send(server, conversation(1), user="session-7")
    pool[home].set_default(Status(503))
    moved = send(server, conversation(2), user="session-7")
    assert moved != home  # failed over (the breaker is now open)
    pool[home].reset()  # back, but the session stays where it moved
    assert send(server, conversation(3), user="session-7") == moved
    answer = explain(server, {"model": "m", "messages": conversation(4), "user": "session-7"})
    affinity = answer["affinity"]
    assert affinity["session"]["source"] == "user"
    assert "session-7" not in str(affinity)
    assert affinity["pinned_to"] == f"{moved}/m"
    assert affinity["why"] == "pinned"
    assert answer["deployments"][0]["deployment"] == f"{moved}/m"


def test_explain_shows_matched_blocks_and_load(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream]
) -> None:
    server = turnout(config(pool))
    request = {"model": "m", "messages": conversation(2)}
    cold = explain(server, request)["affinity"]
    assert cold["why"] == "rendezvous"
    assert all(d["matched_blocks"] == 0 for d in cold["deployments"])
    home = send(server, conversation(2))
    seen = sum(len(f.requests) for f in pool.values())
    warm = explain(server, request)["affinity"]
    assert sum(len(f.requests) for f in pool.values()) == seen  # explain calls nothing
    assert warm["winner"] == f"{home}/m"
    assert warm["why"] == "longest prefix"
    matched = {d["deployment"]: d["matched_blocks"] for d in warm["deployments"]}
    assert matched[f"{home}/m"] == warm["prompt_blocks"] > 0
    assert all(d["load"] == 0 and not d["overloaded"] for d in warm["deployments"])
    assert warm["session"] is None
    # One decision for this prompt so far: not a hot prefix, far under its share.
    assert (warm["prefix_recent_decisions"], warm["hot_prefix"]) == (1, False)
    assert warm["share_capacity"] >= 40
    recent = {d["deployment"]: d["recent_decisions"] for d in warm["deployments"]}
    assert recent[f"{home}/m"] == 1
    assert sum(recent.values()) == 1
    assert not any(d["over_share"] for d in warm["deployments"])


def test_two_turnouts_sharing_redis_share_session_pins(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream], redis_url: str
) -> None:
    state = {"redis_url": redis_url, "prefix": f"test:{uuid.uuid4().hex}:"}
    shared = config(pool, state=state, storage={"single_replica": True})
    one, two = turnout(shared), turnout(shared)
    # Two Turnouts that share nothing choose alike for the same prompt.
    for c in range(6):
        messages = conversation(1, f"Tenant {c} handbook. " * 8)
        assert send(one, messages) == send(two, messages)
    home = send(one, conversation(1), user="shared")
    # A prompt `two` would by itself send elsewhere: the shared pin wins.
    for i in range(40):
        messages = conversation(1, f"Unrelated prompt {i}. " * 8)
        cold = explain(two, {"model": "m", "messages": messages})["affinity"]["winner"]
        if cold != f"{home}/m":
            break
    assert cold != f"{home}/m"
    assert send(two, messages, user="shared") == home


async def test_a_hot_prefix_spills_once_its_deployment_passes_max_load(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream]
) -> None:
    for fake in pool.values():
        fake.set_default(Ok(delay=0.4))
    server = turnout(config(pool))
    messages = conversation(1)
    async with server.async_client(ADMIN) as client:
        calls = [client.chat.completions.create(model="m", messages=messages) for _ in range(16)]  # type: ignore[arg-type]
        await asyncio.gather(*calls)
    shares = sorted(len(f.requests) for f in pool.values())
    assert sum(shares) == 16
    # Affinity alone would send all 16 to the prefix's home; it holds the whole prompt, so
    # it is passed over above twice the cap: at most 2 x ceil(1.25 x 16 / 4) = 10 of 16.
    assert shares[-1] <= 10
    assert shares[-2] > 0


def test_a_session_header_pins_the_conversation(
    turnout: StartTurnout, pool: dict[str, FakeOpenAIUpstream]
) -> None:
    server = turnout(config(pool))
    home = send(server, conversation(1), extra_headers={"X-Session-Id": "conv-42"})
    other = [{"role": "user", "content": "a different prompt entirely " * 10}]
    query = {"request": {"model": "m", "messages": other}, "headers": {"x-session-id": "conv-42"}}
    with server.client(ADMIN) as client:
        answer = client.post("/router/explain", cast_to=object, body=query)
    assert isinstance(answer, dict)
    assert answer["affinity"]["session"]["source"] == "header:x-session-id"
    assert answer["affinity"]["pinned_to"] == f"{home}/m"
    assert send(server, other, extra_headers={"x-session-id": "conv-42"}) == home
