"""A local sampler served by the sampler host (`providers.local.host`), as a worker sees
it: the same `Provider`, its calls forwarded over the host's private socket.

It declares what the sampler it stands in for declares (endpoints and capabilities are
taken from that provider, built in the worker but never started, so never loaded), and
keeps its behaviour:

- A call that arrives before the host has loaded the model waits for it (its `StartGate`,
  as in one process); a model that failed to load fails every call as Turnout's own
  limit (`OWN_LIMIT`: no breaker counts it).
- Each call is one connection; a cancelled call (the client went away) closes it, and the
  host cancels the generation.
- `load()` is the host's queue depth, which the host pushes on a status connection held
  open for the provider's life; that connection's end says the host is gone.
- A host that is gone (killed, crashed) fails calls at once, as an upstream that refuses
  connections does (`CONNECT` before an answer, `STREAM_BROKEN` after a first chunk): the
  breaker of the deployment counts them, and the status connection is retried until the
  host (restarted by `turnout serve`) answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.errors import UpstreamError
from providers.local.host_wire import (
    ChannelClosed,
    error_from_json,
    read_frame,
    request_to_json,
    response_from_json,
    write_frame,
)
from providers.startup import StartGate
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

log = structlog.get_logger("turnout.samplers")

RECONNECT_S = 0.2  # between tries to reach a host that is not answering
START_WAIT_S = 120.0  # a host that has not answered at all by then will not: start fails


# A host too busy to count a prompt within this long is answered as one that cannot:
# the caller estimates instead of holding the request (count_tokens has no deadline).
COUNT_TIMEOUT_S = 10.0
# Affinity routing asks what the engine's prefix cache holds before it sends a request:
# an answer later than this is none (the router falls back to its own record), so a busy
# host never holds a routing decision for longer (the in-process ask takes ~5 ms here).
PROBE_TIMEOUT_S = 0.5


class RemoteSampler(Provider):
    def __init__(
        self,
        name: str,
        socket_path: str,
        endpoints: frozenset[Endpoint],
        capabilities: Capabilities,
        fingerprint: str,
        *,
        prefix_probe: bool = False,
    ) -> None:
        """`prefix_probe`: the sampler stood in for has `cached_prompt_tokens` (an engine
        with a prefix cache), which this then asks the host for."""
        super().__init__(name)
        if prefix_probe:
            self.cached_prompt_tokens = self._cached_prompt_tokens
        self._path = socket_path
        self._endpoints = endpoints
        self._capabilities = capabilities
        self._fingerprint = fingerprint
        self._gate = StartGate(name, "the sampler host cannot serve it")
        self._load: int | None = None
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def standing_in_for(cls, local: Provider, socket_path: str, fingerprint: str) -> RemoteSampler:
        probe = local.cached_prompt_tokens is not None
        return cls(
            local.name,
            socket_path,
            local.endpoints,
            local.capabilities,
            fingerprint,
            prefix_probe=probe,
        )

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return self._endpoints

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def load(self) -> int | None:
        return self._load

    async def start(self) -> None:
        await self._gate.run(self._start())

    async def _start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watch = asyncio.create_task(self._watch_host(ready))
        await ready

    async def aclose(self) -> None:
        self._gate.close()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def count_chat_tokens(self, body: Mapping[str, Any]) -> int | None:
        """As in one process: None until the model is loaded (the caller then estimates),
        and None too while the host cannot be reached."""
        result = await self._ask("count_chat_tokens", body, COUNT_TIMEOUT_S)
        return result if isinstance(result, int) else None

    async def _cached_prompt_tokens(self, body: Mapping[str, Any]) -> tuple[int, int] | None:
        """What the host's engine holds of `body`'s prompt, as the sampler answers in one
        process: (held tokens, prompt tokens), or None before the model is loaded, for a
        prompt it cannot tell about, when the host is out of reach or slower than
        `PROBE_TIMEOUT_S`."""
        result = await self._ask("cached_prompt_tokens", body, PROBE_TIMEOUT_S)
        if (
            isinstance(result, list)
            and len(result) == 2
            and all(type(n) is int and n >= 0 for n in result)
        ):
            return result[0], result[1]
        return None

    async def _ask(self, op: str, body: Mapping[str, Any], within_s: float) -> Any:
        """The host's `result` for a question about `body`; None before the model is
        loaded, while the host cannot be reached, or past `within_s`: a caller that asks
        can always do without the answer."""
        if not self._gate.started:
            return None
        try:
            async with asyncio.timeout(within_s):
                async with self._call({"op": op, "body": dict(body)}) as reader:
                    frame = await self._next(reader, started=False)
        except (UpstreamError, TimeoutError):
            return None
        return frame.get("result")

    async def check(self) -> None:
        try:
            async with self._call({"op": "check"}) as reader:
                frame = await self._next(reader, started=False)
        except UpstreamError as exc:
            raise UpstreamError.unavailable(exc.message) from None
        if "error" in frame:
            raise error_from_json(frame["error"])

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        await self._gate.wait()
        async with self._call({"op": "complete", "request": request_to_json(request)}) as reader:
            frame = await self._next(reader, started=False)
        if "response" in frame:
            return response_from_json(frame["response"])
        raise self._error_in(frame)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        await self._gate.wait()
        async with self._call({"op": "stream", "request": request_to_json(request)}) as reader:
            started = False
            while True:
                frame = await self._next(reader, started=started)
                chunk = frame.get("chunk")
                if chunk is not None:
                    started = True
                    yield chunk
                elif frame.get("end"):
                    return
                else:
                    raise self._error_in(frame)

    @asynccontextmanager
    async def _call(self, frame: JSONObject) -> AsyncIterator[asyncio.StreamReader]:
        """One call's connection, its request sent; closed on the way out, which cancels
        the host's work if it has not finished."""
        try:
            reader, writer = await asyncio.open_unix_connection(self._path)
        except OSError as exc:
            raise UpstreamError.connect(
                f"{self.name}: the sampler host is not answering ({exc.strerror or exc})"
            ) from None
        try:
            await write_frame(writer, {**frame, "provider": self.name})
            yield reader
        except ConnectionError as exc:
            message = f"{self.name}: the sampler host went away ({exc})"
            raise UpstreamError.connect(message) from None
        finally:
            writer.close()

    async def _next(self, reader: asyncio.StreamReader, *, started: bool) -> JSONObject:
        try:
            return await read_frame(reader)
        except ChannelClosed:
            message = f"{self.name}: the sampler host went away during the call"
            if started:
                raise UpstreamError.stream_broken(message) from None
            raise UpstreamError.connect(message) from None

    def _error_in(self, frame: JSONObject) -> UpstreamError:
        error = frame.get("error")
        if isinstance(error, dict):
            return error_from_json(error)
        return UpstreamError.protocol(f"{self.name}: the sampler host answered {sorted(frame)}")

    async def _watch_host(self, ready: asyncio.Future[None]) -> None:
        """Hold the status connection for the provider's life: settle `ready` from the
        host's first word on this provider, keep `load()` current, reconnect when lost."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + START_WAIT_S
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self._path)
            except OSError as exc:
                if not ready.done() and loop.time() > give_up:
                    ready.set_exception(RuntimeError(f"the sampler host is not answering: {exc}"))
                    return
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                await write_frame(writer, {"op": "status"})
                while True:
                    if not self._apply(await read_frame(reader), ready):
                        return
            except (ChannelClosed, ConnectionError):
                self._load = None
                if ready.done():
                    log.warning("sampler_host_lost", provider=self.name)
            finally:
                writer.close()
            await asyncio.sleep(RECONNECT_S)

    def _apply(self, status: JSONObject, ready: asyncio.Future[None]) -> bool:
        """Take in one status frame; False when this provider will never be served."""
        entry = (status.get("providers") or {}).get(self.name)
        refusal = _refusal(self.name, entry, self._fingerprint)
        if refusal is not None:
            if not ready.done():
                ready.set_exception(RuntimeError(refusal))
                return False
            return True  # a restarted host that fails to load: calls get its own-limit error
        assert entry is not None
        load = entry.get("load")
        self._load = load if isinstance(load, int) else None
        if entry.get("state") == "started" and not ready.done():
            ready.set_result(None)
        return True


def _refusal(name: str, entry: Any, fingerprint: str) -> str | None:
    restart = "restart turnout serve to load the local providers this config names"
    if not isinstance(entry, dict):
        return f"the sampler host does not serve {name} (it was started without it): {restart}"
    if entry.get("fingerprint") != fingerprint:
        return f"the sampler host serves {name} with other settings: {restart}"
    if entry.get("state") == "failed":
        return f"the model failed to load: {entry.get('error')}"
    return None
