"""The HTTP seam shared by remote adapters: pooled aiohttp sessions, read timeouts, and
the one place where transport failures become `UpstreamError`.

aiohttp rather than httpx's default transport: see bench/transport/RESULTS.md, where
httpx's default async transport collapses at 32+ concurrent requests on this machine.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp

from providers.errors import UpstreamError
from providers.timeouts import UpstreamTimeouts

MAX_RETRY_AFTER_HEADER = 24 * 3600.0
# What is read of an error status's body: room for any real error message (the log keeps
# 8 KiB of it, providers.errors), and little memory however many calls fail at once.
MAX_ERROR_BODY_BYTES = 64 * 1024
# This process ran out of file descriptors, kernel buffers or local ports: no fault of the
# backend's (ENFILE: the whole system's descriptors).
_OWN_LIMITS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL})


def open_session(timeouts: UpstreamTimeouts) -> aiohttp.ClientSession:
    """One pooled session per provider, opened and closed with the app.

    Its pool has no limit: the adapter bounds calls in flight itself (providers.http_adapter)
    because aiohttp times a wait for a free connection with its `connect` timeout, and a
    call that only waited in our own queue would fail as if the backend had not answered.
    Only the TCP (and TLS) connect itself is bounded by `timeouts.connect` (`sock_connect`).
    """
    connector = aiohttp.TCPConnector(
        limit=0, ttl_dns_cache=300, keepalive_timeout=30, enable_cleanup_closed=True
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeouts.connect)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=True, raise_for_status=False
    )


def compact(body: bytes) -> bytes:
    """`body` in memory of its own size. orjson's output keeps the buffer it was written
    into (4 KiB at the least), and a stream holds its request body until it ends: 4 KiB
    of every open stream (bench/streams_bench.py), for a copy of a few hundred bytes."""
    return memoryview(body).tobytes()


@contextmanager
def mapped_transport_errors(what: str, *, started: bool = False) -> Iterator[None]:
    """Translate aiohttp/OS failures into `UpstreamError`; `started` marks a body in flight."""
    try:
        yield
    except UpstreamError:
        raise
    except TimeoutError as exc:
        phase = "stream went idle" if started else "no response"
        raise UpstreamError.timeout(f"{what}: {phase} within the timeout") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        if started:
            raise UpstreamError.stream_broken(f"{what}: connection lost mid-body ({exc})") from exc
        raise UpstreamError.connect(f"{what}: connection closed ({exc})") from exc
    except (aiohttp.ClientConnectionError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in _OWN_LIMITS:
            raise UpstreamError.own_limit(f"{what}: {exc.__class__.__name__}: {exc}") from exc
        if started:
            raise UpstreamError.stream_broken(f"{what}: connection lost mid-body ({exc})") from exc
        raise UpstreamError.connect(f"{what}: {exc.__class__.__name__}: {exc}") from exc
    except aiohttp.ClientResponseError as exc:
        raise UpstreamError.protocol(f"{what}: {exc}") from exc


class BodyTooLarge(Exception):
    """An answer held more than its cap; the caller says, in its terms, what that means."""


async def read_body(response: aiohttp.ClientResponse, limit: float, max_bytes: int) -> bytes:
    """The whole (non-streamed) body, which must arrive within `limit` seconds of the
    headers; one timer for the whole read rather than one per network read. Raises
    `BodyTooLarge` once it holds more than `max_bytes` (decompressed): the rest is never
    read, and releasing the response then closes its connection."""
    declared = response.content_length
    if (
        declared is not None
        and declared > max_bytes
        and not response.headers.get("content-encoding")
    ):
        raise BodyTooLarge(f"response body of {declared} bytes, over {max_bytes}")
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(limit):
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLarge(f"response body over {max_bytes} bytes")
            parts.append(chunk)
    return b"".join(parts)


async def read_error_body(response: aiohttp.ClientResponse, limit: float) -> bytes:
    """At most `MAX_ERROR_BODY_BYTES` of an error status's body: an error message is
    short, and anything past that is dropped unread (the connection is closed)."""
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(limit):
        while size < MAX_ERROR_BODY_BYTES:
            chunk = await response.content.read(MAX_ERROR_BODY_BYTES - size)
            if not chunk:
                break
            size += len(chunk)
            parts.append(chunk)
    if not response.content.at_eof():
        response.close()
    return b"".join(parts)


async def iter_body(response: aiohttp.ClientResponse, idle: float) -> AsyncIterator[bytes]:
    """Body bytes as they arrive; raises TimeoutError when a read waits past `idle`."""
    content = response.content
    while True:
        async with asyncio.timeout(idle):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the backend asked us to wait: `retry-after-ms`, else `Retry-After`
    (delta-seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, min(float(millis) / 1000.0, MAX_RETRY_AFTER_HEADER))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_HEADER))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER_HEADER))
