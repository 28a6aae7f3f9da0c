"""The upstream HTTP clients under comparison, behind one tiny interface.

Each client POSTs a JSON body to an OpenAI-style upstream and either returns the whole
response body (``complete``) or yields raw SSE ``data:`` payloads (``stream``).
``httpx2`` is pydantic's httpx fork (installed in the venv), whose pool fixes the
quadratic ``_assign_requests_to_connections`` of httpcore 1.0.x.

Connection pools are sized to the expected concurrency for every client, so the
comparison is about the transport, not about default pool limits (httpx's default keeps
only 20 idle connections, which would penalise it at concurrency 128).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

import aiohttp
import httpx
import httpx2
from httpx_aiohttp import AiohttpTransport

ClientKind = Literal["httpx", "httpx2", "httpx-aiohttp", "aiohttp"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("httpx", "httpx2", "httpx-aiohttp", "aiohttp")
JSON_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-mock"}
KEEPALIVE_S = 60.0


class UpstreamClient(Protocol):
    async def complete(self, body: bytes) -> bytes: ...

    def stream(self, body: bytes) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class HttpxUpstream:
    """httpx.AsyncClient (or httpx2's) over httpcore, or over httpx_aiohttp's transport."""

    def __init__(self, url: str, limit: int, kind: ClientKind) -> None:
        self.url = url
        self.client: httpx.AsyncClient | httpx2.AsyncClient
        if kind == "httpx2":
            limits2 = httpx2.Limits(
                max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=KEEPALIVE_S
            )
            self.client = httpx2.AsyncClient(limits=limits2, headers=JSON_HEADERS, timeout=30.0)
            return
        limits = httpx.Limits(
            max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=KEEPALIVE_S
        )
        transport = AiohttpTransport(limits=limits) if kind == "httpx-aiohttp" else None
        self.client = httpx.AsyncClient(
            limits=limits, transport=transport, headers=JSON_HEADERS, timeout=30.0
        )

    async def complete(self, body: bytes) -> bytes:
        response = await self.client.post(self.url, content=body)
        response.raise_for_status()
        return response.content

    async def stream(self, body: bytes) -> AsyncIterator[bytes]:
        async with self.client.stream("POST", self.url, content=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    yield line[6:].encode()

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpUpstream:
    """Plain aiohttp.ClientSession with a pool sized to the concurrency."""

    def __init__(self, url: str, limit: int) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limit, limit_per_host=limit, keepalive_timeout=KEEPALIVE_S
            ),
            headers=JSON_HEADERS,
            timeout=aiohttp.ClientTimeout(total=30.0),
            auto_decompress=False,
        )

    async def complete(self, body: bytes) -> bytes:
        async with self.session.post(self.url, data=body) as response:
            response.raise_for_status()
            return await response.read()

    async def stream(self, body: bytes) -> AsyncIterator[bytes]:
        async with self.session.post(self.url, data=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: "):
                    yield line[6:].rstrip(b"\r\n")

    async def aclose(self) -> None:
        await self.session.close()


def make_client(kind: ClientKind, url: str, limit: int) -> UpstreamClient:
    """Must be called inside a running event loop (aiohttp binds to it)."""
    if kind == "aiohttp":
        return AiohttpUpstream(url, limit)
    return HttpxUpstream(url, limit, kind)
