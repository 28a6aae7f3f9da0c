"""A minimal cleartext HTTP/2 client (prior knowledge) for `streams_bench.py`: many
concurrent streams on one connection, each read on its own.

Not httpx's HTTP/2: httpcore reads a connection under one lock, and a stream waiting for
its response holds that lock while it blocks on the socket, so a new stream's headers wait
behind every idle stream on the connection until data arrives for each in turn. With
thousands of held streams (a keep-alive comment every 5 s) streams opened at ~5 a second.
Here one protocol object reads the socket and hands each event to its stream's queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import h2.config
import h2.connection
import h2.events


class StreamError(Exception):
    """The stream was reset, or the connection ended before the stream did."""


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection; `post` opens a stream on it."""

    def __init__(self, authority: str) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config)
        self._authority = authority
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, asyncio.Queue[h2.events.Event | None]] = {}

    @classmethod
    async def open(cls, host: str, port: int) -> H2Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        for event in self._h2.receive_data(data):
            if isinstance(event, h2.events.DataReceived) and event.stream_id:
                # Read at once by the bench, so the window is given back at once.
                length = event.flow_controlled_length or 0
                self._h2.acknowledge_received_data(length, event.stream_id)
            stream_id = getattr(event, "stream_id", None)
            if stream_id in self._streams:
                self._streams[stream_id].put_nowait(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._end_all()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_all()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def post(self, path: str, body: bytes) -> AsyncGenerator[tuple[int, bytes]]:
        """(status, b"") once the headers are in, then (status, line) per line of the body."""
        stream_id = self._h2.get_next_available_stream_id()
        queue: asyncio.Queue[h2.events.Event | None] = asyncio.Queue()
        self._streams[stream_id] = queue
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", self._authority),
            (":path", path),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        self._h2.send_headers(stream_id, headers)
        self._h2.send_data(stream_id, body, end_stream=True)
        self._flush()
        try:
            async for item in _lines(queue):
                yield item
        finally:
            del self._streams[stream_id]

    def _flush(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._h2.data_to_send())

    def _end_all(self) -> None:
        for queue in self._streams.values():
            queue.put_nowait(None)


async def _lines(queue: asyncio.Queue[h2.events.Event | None]) -> AsyncGenerator[tuple[int, bytes]]:
    status = 0
    buffer = b""
    while True:
        event = await queue.get()
        if isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers or [])[b":status"])
            yield status, b""
        elif isinstance(event, h2.events.DataReceived):
            buffer += event.data or b""
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield status, line
        elif isinstance(event, h2.events.StreamEnded):
            if buffer:
                yield status, buffer
            return
        elif event is None or isinstance(event, h2.events.StreamReset):
            raise StreamError(type(event).__name__)
