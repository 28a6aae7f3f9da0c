from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from providers.errors import UpstreamError
from providers.local.tokenizer import TokenizerAdapter
from providers.local.tokenizer_cache import (
    TokenizerCache,
    check_declared_tokenizer,
    load_tokenizer,
)
from tests.local_tokenizer import smollm2_tokenizer


class _CountingLoader:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.adapter = TokenizerAdapter(smollm2_tokenizer())

    def __call__(self, name: str) -> TokenizerAdapter:
        self.calls.append(name)
        self.threads.add(threading.get_ident())
        if name == "broken":
            raise OSError("no such file")
        return self.adapter


async def test_a_tokenizer_is_loaded_once_off_the_event_loop() -> None:
    loader = _CountingLoader()
    cache = TokenizerCache(loader)
    first, second = await asyncio.gather(cache.get("smol"), cache.source("smol").load())
    assert first is second is loader.adapter
    assert loader.calls == ["smol"]
    assert threading.get_ident() not in loader.threads


async def test_a_failed_load_is_a_server_error_and_stays_failed() -> None:
    loader = _CountingLoader()
    cache = TokenizerCache(loader)
    for _ in range(2):
        with pytest.raises(UpstreamError, match="'broken' declared for this deployment") as caught:
            await cache.get("broken")
        assert caught.value.status == 500
    assert loader.calls == ["broken"]


async def test_a_waiter_cancelled_does_not_cancel_the_shared_load() -> None:
    started, release = threading.Event(), threading.Event()
    adapter = TokenizerAdapter(smollm2_tokenizer())

    def slow(_: str) -> TokenizerAdapter:
        started.set()
        release.wait(5)
        return adapter

    cache = TokenizerCache(slow)
    waiter = asyncio.create_task(cache.get("smol"))
    await asyncio.to_thread(started.wait, 5)
    waiter.cancel()
    release.set()
    assert await cache.get("smol") is adapter


def test_declared_names_must_exist(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")
    for ok in ("smollm2-135m-instruct", str(tmp_path), str(gguf)):
        assert check_declared_tokenizer(ok) == ok
    with pytest.raises(ValueError, match="not a packaged model"):
        check_declared_tokenizer(str(tmp_path / "missing"))


def test_the_packaged_smollm2_tokenizer_loads_by_name() -> None:
    smollm2_tokenizer()  # skips when the package is absent
    adapter = load_tokenizer("smollm2-135m-instruct")
    assert adapter.encode_text("hello world") == smollm2_tokenizer().encode("hello world")
    assert adapter.chat_text([{"role": "user", "content": "hi"}]).endswith("assistant\n")
