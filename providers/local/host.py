"""The sampler host: the in-process samplers of a `turnout serve` with several workers,
loaded once, in one process, and served to every worker over a private Unix socket.

Each connection is one thing (see `providers.local.host_wire`):

- `{"op": "status"}`: the host writes, for every provider it serves, its state
  (`loading`, `started`, `failed` and why), the fingerprint of the settings it was built
  from and its queue depth (`Provider.load`), at once and then whenever any of it changes
  (looked at every `STATUS_EVERY_S`), until the worker closes the connection. A worker
  learns from it that its model is ready, how busy the host is, and, from the connection's
  end, that the host is gone.
- `{"op": "complete" | "stream" | "count_chat_tokens" | "check", "provider": name, ...}`:
  one call to one provider, answered by a `response`, `chunk`s then `end`, a `result`, or
  an `error` (an `UpstreamError`, its kind and status kept). The worker closing the
  connection cancels the call, as a client going away cancels an in-process one.

A call that arrives while its model loads waits for it, inside the provider (its
`StartGate`), exactly as it would in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import Any, Literal

import structlog

from providers.base import Provider
from providers.errors import UpstreamError
from providers.local.host_wire import (
    ChannelClosed,
    error_to_json,
    read_frame,
    request_from_json,
    response_to_json,
    write_frame,
)
from providers.types import JSONObject

log = structlog.get_logger("turnout.samplers")

STATUS_EVERY_S = 0.05  # how stale a worker's figure of the queue depth may be
State = Literal["loading", "started", "failed"]


class SamplerHost:
    """Serves `providers` (built here, started by `start_providers`) on a Unix socket.
    `fingerprints`: per provider, what its settings were, so that a worker whose config
    says otherwise (a reload changed them) is told instead of being served another model."""

    def __init__(self, providers: Mapping[str, Provider], fingerprints: Mapping[str, str]) -> None:
        self._providers = dict(providers)
        self._fingerprints = dict(fingerprints)
        self._states: dict[str, tuple[State, str | None]] = {
            name: ("loading", None) for name in self._providers
        }
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def listen(self, path: str) -> None:
        """Answer on `path` (in a directory only this user can enter: see
        router/sampler_process.py); the socket itself is made owner-only too."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous host's, that died without removing it
        self._server = await asyncio.start_unix_server(self._connection, path=path)
        os.chmod(path, 0o600)

    async def start_providers(self) -> None:
        """One at a time, as a gateway starts them: two models loading at once race in
        transformers' lazy imports and share the same cores."""
        for name, provider in self._providers.items():
            log.info("provider_starting", provider=name)
            try:
                await provider.start()
            except Exception as exc:
                log.error("provider_start_failed", provider=name, error=str(exc), exc_info=exc)
                self._states[name] = ("failed", str(exc))
                continue
            self._states[name] = ("started", None)
            log.info("provider_started", provider=name)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await asyncio.gather(*(p.aclose() for p in self._providers.values()))

    def status(self) -> JSONObject:
        providers = {}
        for name, provider in self._providers.items():
            state, error = self._states[name]
            providers[name] = {
                "state": state,
                "error": error,
                "fingerprint": self._fingerprints.get(name),
                "load": provider.load(),
            }
        return {"pid": os.getpid(), "providers": providers}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            frame = await read_frame(reader)
            if frame.get("op") == "status":
                await self._status(reader, writer)
            else:
                await self._call(frame, reader, writer)
        except (ChannelClosed, ConnectionError):
            pass  # the worker went away: nothing to answer
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        gone = asyncio.ensure_future(reader.read(1))
        last: JSONObject | None = None
        try:
            while not gone.done():
                now = self.status()
                if now != last:
                    await write_frame(writer, now)
                    last = now
                await asyncio.wait({gone}, timeout=STATUS_EVERY_S)
        finally:
            gone.cancel()

    async def _call(
        self, frame: JSONObject, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer `frame`, and cancel the work if the worker closes the connection first
        (after its request frame, a worker sends nothing more: any read returning is EOF)."""
        work = asyncio.ensure_future(self._answer(frame, writer))
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            gone.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)

    async def _answer(self, frame: JSONObject, writer: asyncio.StreamWriter) -> None:
        name = str(frame.get("provider"))
        provider = self._providers.get(name)
        try:
            if provider is None:
                raise UpstreamError.own_limit(
                    f"{name}: the sampler host does not serve it (it loads the local "
                    "providers configured when turnout serve started: restart it)"
                )
            await _dispatch(provider, frame, writer)
        except UpstreamError as exc:
            await write_frame(writer, {"error": error_to_json(exc)})
        except ConnectionError:
            raise  # the worker went away mid-answer: nobody to tell
        except Exception as exc:  # a bug in a sampler: said as the deployment's failure
            log.error("sampler_call_failed", provider=name, op=frame.get("op"), exc_info=exc)
            # The exception's text (model paths, a library's message) stays in the log.
            error = UpstreamError.protocol(
                f"{name}: the sampler host failed ({type(exc).__name__})"
            )
            await write_frame(writer, {"error": error_to_json(error)})


async def _dispatch(provider: Provider, frame: JSONObject, writer: asyncio.StreamWriter) -> None:
    op = frame.get("op")
    if op == "complete":
        response = await provider.complete(request_from_json(frame["request"]))
        await write_frame(writer, {"response": response_to_json(response)})
    elif op == "stream":
        # aclosing: a cancelled call ends the provider's stream (and its generation) now,
        # not whenever the generator is collected.
        async with contextlib.aclosing(provider.stream(request_from_json(frame["request"]))) as s:
            async for chunk in s:
                await write_frame(writer, {"chunk": chunk})
        await write_frame(writer, {"end": True})
    elif op == "count_chat_tokens":
        await write_frame(writer, {"result": await provider.count_chat_tokens(frame["body"])})
    elif op == "cached_prompt_tokens":
        probe = provider.cached_prompt_tokens
        held = await probe(frame["body"]) if probe is not None else None
        await write_frame(writer, {"result": list(held) if held is not None else None})
    elif op == "check":
        await provider.check()
        await write_frame(writer, {"result": None})
    else:
        raise UpstreamError.protocol(f"{provider.name}: unknown sampler host call {op!r}")
