"""Review of `strategy: affinity`'s wiring (issue 19): a plan's fallback model's deployments
are ordered after the model's own, and must not take the conversation's session pin;
`prompt_cache_key` goes only where the API takes it."""

from __future__ import annotations

import random
from collections.abc import Callable

from policies.affinity.engine import _pin_id
from policies.affinity.key import affinity_key
from policies.affinity.settings import AffinitySettings
from policies.config import Deployment
from policies.plan import Target
from policies.policy_config import Strategy
from policies.state.memory import MemoryStore
from policies.strategies import Orderer
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

OWN = [Target("m", Deployment(provider=f"m{i}", model="m")) for i in range(4)]
FALLBACK = [Target("f", Deployment(provider=f"f{i}", model="f")) for i in range(4)]


async def test_a_fallback_models_deployments_do_not_take_the_session_pin() -> None:
    store = MemoryStore()
    order = Orderer(store, random.Random(), lambda _: None, lambda _: None)
    firsts = set()
    for turn in range(6):  # one conversation, its prompt rewritten each turn
        body = {
            "model": "m",
            "user": "u-1",
            "messages": [{"role": "user", "content": f"turn {turn} " * 40}],
        }
        key = affinity_key(AffinitySettings(), body, {}, "team")
        ordered = await order.order([*OWN, *FALLBACK], Strategy.AFFINITY, key)
        firsts.add(ordered[0].label)
        assert key.session is not None
        pinned = await store.session_pin(_pin_id(key.session.digest, "m"), 0.0)
        assert pinned in {t.label for t in OWN}, pinned
    assert len(firsts) == 1  # the session's pin keeps it on one of the model's own


def test_prompt_cache_key_is_set_on_chat_but_never_on_embeddings(
    turnout: Callable[..., RunningTurnout],
) -> None:
    """OpenAI's embeddings API has no `prompt_cache_key` (an unknown argument is a 400
    there); an embedding model routed by affinity must not be sent one."""
    fakes = {name: FakeOpenAIUpstream().start() for name in ("r0", "r1")}
    try:
        models = {
            "m": {
                "deployments": [{"provider": n, "model": "m"} for n in fakes],
                "strategy": "affinity",
                "affinity": {"set_prompt_cache_key": True},
            }
        }
        urls = {n: f.base_url for n, f in fakes.items()}
        keys = {"keys": [{"key": "sk-admin", "admin": True}]}
        server = turnout(simple_config(urls, models, **keys))
        with server.client("sk-admin") as client:
            client.embeddings.create(model="m", input="some text " * 20)
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello " * 40}]
            )
        sent = [r.json for f in fakes.values() for r in f.requests]
        embedded = [body for body in sent if "input" in body]
        chatted = [body for body in sent if "messages" in body]
        assert len(embedded) == 1
        assert len(chatted) == 1
        assert "prompt_cache_key" not in embedded[0]
        assert str(chatted[0]["prompt_cache_key"]).startswith("turnout-")
    finally:
        for fake in fakes.values():
            fake.stop()


SMALL = [Target("small", Deployment(provider=f"h{i}", model="small")) for i in range(4)]


async def test_one_session_id_sent_to_two_models_keeps_each_models_pin() -> None:
    """Claude Code sends one `x-claude-code-session-id` to its main model and its small
    one: with one pin per session, each model's turn moved the other's pin to a
    deployment outside its pool, and the main model's turns scattered."""
    store = MemoryStore()
    order = Orderer(store, random.Random(), lambda _: None, lambda _: None)
    headers = {"x-claude-code-session-id": "sess-1"}
    firsts = []
    for turn in range(8):
        for pool in (OWN, SMALL):
            name = pool[0].model_name
            content = f"turn {turn} {name} " * 30  # a prompt rewritten each turn
            body = {"model": name, "messages": [{"role": "user", "content": content}]}
            key = affinity_key(AffinitySettings(), body, headers, "team")
            chosen = (await order.order(pool, Strategy.AFFINITY, key))[0].label
            if pool is OWN:
                firsts.append(chosen)
    assert len(set(firsts)) == 1, firsts
