"""The sampler host and its workers' `RemoteSampler` over a real Unix socket, with a
recording backend in the host: requests and errors cross whole, a closed call cancels the
host's work, `load()` follows the host's queue, and a host serving other settings, or
none, is said at start."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.errors import Failure, UpstreamError
from providers.local.host import SamplerHost
from providers.local.remote import RemoteSampler
from providers.timeouts import TimeoutOverrides
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

pytestmark = pytest.mark.asyncio


class Recording(Provider):
    """Answers with what it was asked; `hold` makes a stream wait after its first chunk."""

    def __init__(self) -> None:
        super().__init__("local")
        self.requests: list[ProviderRequest] = []
        self.cancelled = asyncio.Event()
        self.queued = 0

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    def load(self) -> int | None:
        return self.queued

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        if request.body.get("fail"):
            raise UpstreamError(
                "too long",
                failure=Failure.STATUS,
                status=400,
                type="invalid_request_error",
                param="messages",
                code="context_length_exceeded",
            )
        return ProviderResponse(body={"echo": dict(request.body)}, headers={"x-a": "1"})

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        self.requests.append(request)
        self.queued += 1
        try:
            yield {"n": 1}
            if request.body.get("hold"):
                await asyncio.Event().wait()
            yield {"n": 2}
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise
        finally:
            self.queued -= 1

    async def check(self) -> None:
        raise UpstreamError.unavailable("local: the engine is not running")

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def serving(backend: Provider) -> AsyncIterator[tuple[SamplerHost, str]]:
    """A sampler host serving `backend` as `local` on a socket of its own."""
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "s.sock")
        host = SamplerHost({"local": backend}, {"local": "same"})
        await host.listen(path)
        await host.start_providers()
        try:
            yield host, path
        finally:
            await host.aclose()


@pytest.fixture
async def hosted() -> AsyncIterator[tuple[Recording, SamplerHost, str]]:
    backend = Recording()
    async with serving(backend) as (host, path):
        yield backend, host, path


async def until(check: Callable[[], bool]) -> None:
    """Polls: the status the host pushes has no event of its own on this side."""
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def remote(path: str, fingerprint: str = "same", name: str = "local") -> RemoteSampler:
    return RemoteSampler(name, path, frozenset({Endpoint.CHAT}), Capabilities(), fingerprint)


async def test_a_request_and_its_answer_cross_whole(
    hosted: tuple[Recording, SamplerHost, str],
) -> None:
    backend, _, path = hosted
    proxy = remote(path)
    await proxy.start()
    request = ProviderRequest(
        Endpoint.CHAT,
        {"model": "m", "messages": [{"role": "user", "content": "é"}], "seed": 3},
        timeouts=TimeoutOverrides(first_byte=2.5),
        background=True,
        headers={"anthropic-beta": "x"},
    )
    response = await proxy.complete(request)
    assert response.body == {"echo": dict(request.body)}
    assert dict(response.headers) == {"x-a": "1"}
    assert backend.requests == [request]
    with pytest.raises(UpstreamError) as raised:
        await proxy.complete(ProviderRequest(Endpoint.CHAT, {"fail": True}))
    error = raised.value
    assert (error.status, error.failure, error.code, error.param, error.message) == (
        400,
        Failure.STATUS,
        "context_length_exceeded",
        "messages",
        "too long",
    )
    with pytest.raises(UpstreamError) as checked:
        await proxy.check()
    assert checked.value.status == 503
    await proxy.aclose()


async def test_closing_a_stream_cancels_the_hosts_work(
    hosted: tuple[Recording, SamplerHost, str],
) -> None:
    backend, _, path = hosted
    proxy = remote(path)
    await proxy.start()
    stream = proxy.stream(ProviderRequest(Endpoint.CHAT, {"hold": True}))
    assert await anext(stream) == {"n": 1}
    await until(lambda: proxy.load() == 1)  # the host's queue, as its status pushes it
    await stream.aclose()
    async with asyncio.timeout(5):
        await backend.cancelled.wait()
    await until(lambda: proxy.load() == 0)
    chunks = [c async for c in proxy.stream(ProviderRequest(Endpoint.CHAT, {}))]
    assert chunks == [{"n": 1}, {"n": 2}]
    await proxy.aclose()


async def test_a_host_gone_fails_calls_as_a_refused_connection(
    hosted: tuple[Recording, SamplerHost, str],
) -> None:
    _, host, path = hosted
    proxy = remote(path)
    await proxy.start()
    await host.aclose()
    await asyncio.to_thread(Path(path).unlink)
    with pytest.raises(UpstreamError) as raised:
        await proxy.complete(ProviderRequest(Endpoint.CHAT, {}))
    assert raised.value.failure is Failure.CONNECT
    await proxy.aclose()


@pytest.mark.parametrize(
    ("name", "fingerprint", "said"),
    [("local", "changed", "other settings"), ("other", "same", "does not serve other")],
)
async def test_a_provider_the_host_does_not_serve_so_fails_to_start(
    hosted: tuple[Recording, SamplerHost, str], name: str, fingerprint: str, said: str
) -> None:
    _, _, path = hosted
    proxy = remote(path, fingerprint, name)
    with pytest.raises(RuntimeError, match=said):
        await proxy.start()
    with pytest.raises(UpstreamError) as raised:
        await proxy.complete(ProviderRequest(Endpoint.CHAT, {}))
    assert raised.value.failure is Failure.OWN_LIMIT
    await proxy.aclose()


class Probed(Recording):
    """A backend with a prefix cache: it holds the first 16 tokens of any prompt of 40;
    `slow` makes it answer after the probe's deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[JSONObject] = []
        self.slow = False
        self.cached_prompt_tokens = self._held

    async def _held(self, body: object) -> tuple[int, int] | None:
        assert isinstance(body, dict)
        self.asked.append(body)
        if self.slow:
            await asyncio.sleep(5)
        return None if body.get("batch") else (16, 40)


async def test_a_prefix_cache_probe_crosses_to_the_host_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's affinity probe (`cached_prompt_tokens`) is the host engine's answer; a
    sampler without the hook stands in without one (no await for it); a host that does not
    answer within `PROBE_TIMEOUT_S` counts as no answer, as does one that cannot tell."""
    import providers.local.remote as remote_module

    backend = Probed()
    async with serving(backend) as (_, path):
        plain = remote(path)
        assert plain.cached_prompt_tokens is None
        proxy = RemoteSampler.standing_in_for(backend, path, "same")
        assert proxy.cached_prompt_tokens is not None
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert await proxy.cached_prompt_tokens(body) is None  # not started yet
        await proxy.start()
        assert await proxy.cached_prompt_tokens(body) == (16, 40)
        assert backend.asked == [body]
        assert await proxy.cached_prompt_tokens({**body, "batch": True}) is None
        monkeypatch.setattr(remote_module, "PROBE_TIMEOUT_S", 0.05)
        backend.slow = True
        assert await proxy.cached_prompt_tokens(body) is None
        await proxy.aclose()
