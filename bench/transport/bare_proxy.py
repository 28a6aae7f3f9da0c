"""The least a Python ASGI gateway does: read the body, POST it upstream with aiohttp, send
the answer back. No routing, validation, policy, log line or metrics: the floor that
bench/proxy_floor.py measures under each ASGI server (bench/README.md, "The hot path").

    export BARE_PROXY_UPSTREAM=http://127.0.0.1:9101
    granian --interface asgi bench.transport.bare_proxy:app
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp


class BareProxy:
    def __init__(self) -> None:
        self._upstream = os.environ.get("BARE_PROXY_UPSTREAM", "http://127.0.0.1:9101")
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        parts, more = [], True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        assert self._session is not None
        url = self._upstream + scope["path"]
        headers = {"content-type": "application/json"}
        async with self._session.post(url, data=b"".join(parts), headers=headers) as response:
            body = await response.read()
            status = response.status
        length = str(len(body)).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            else:
                if self._session is not None:
                    await self._session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = BareProxy()
