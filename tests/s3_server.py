"""A throwaway S3 (moto's server) on loopback for tests, and the session fixture that runs one.

A real server speaking S3's HTTP API rather than a fake of our own store: `S3Blobs` is
tested through obstore's real client, multipart uploads, ranges and errors included. moto
keeps everything in its own memory, so the server leaves nothing behind. It is slow to
import (a second or more), hence one server per session; tests keep apart by prefix.

Test packages that need S3 re-export the fixture from their conftest:
`from tests.s3_server import s3_settings as s3_settings`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from policies.storage.settings import S3Settings
from tests.server_process import LoopbackServer
from tests.server_process import free_port as free_port  # tests import it from here

BUCKET = "turnout-test"
MISSING = (
    "moto's server is not installed; the S3 store tests need it. "
    "Install the dev dependencies (moto[server]) and try again."
)


def _moto_server() -> list[str]:
    """The venv's `moto_server`, else the one on PATH, else the module through this Python."""
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    return [found] if found else [sys.executable, "-m", "moto.server"]


class S3Server(LoopbackServer):
    """`with S3Server() as server:` gives `server.endpoint`, with `BUCKET` created; the
    server stops on exit."""

    name = "moto_server"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, prefix: str = "turnout/") -> S3Settings:
        return S3Settings(
            bucket=BUCKET,
            endpoint=self.endpoint,
            prefix=prefix,
            key_id="testing",
            secret="testing",
            allow_http=True,
        )

    def _command(self, port: int) -> list[str]:
        return [*_moto_server(), "-H", "127.0.0.1", "-p", str(port)]

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint}/moto-api/", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def _ready(self) -> None:
        httpx.put(f"{self.endpoint}/{BUCKET}", timeout=5).raise_for_status()


async def bucket_keys(settings: S3Settings, *, uploads: bool = False) -> list[str]:
    """The bucket's object keys, or (`uploads`) the keys of its multipart uploads begun and
    neither completed nor aborted. Plain GETs: moto does not check signatures."""
    query = "uploads" if uploads else "list-type=2"
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"{settings.endpoint}/{settings.bucket}?{query}")
    answer.raise_for_status()
    listing = ElementTree.fromstring(answer.content)
    return [element.text or "" for element in listing.iter() if element.tag.endswith("}Key")]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server started once for the session. Fails (never skips) without moto: a
    skipped S3 suite would pass CI while testing nothing shared."""
    if importlib.util.find_spec("moto") is None:
        pytest.fail(MISSING, pytrace=False)
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_settings(s3_server: S3Server) -> S3Settings:
    """Settings for the session's bucket (`BUCKET`, prefix "turnout/"); tests that must
    not see each other's keys take their own prefix with `model_copy`."""
    return s3_server.settings()
