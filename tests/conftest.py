from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout

# Files and batches of the servers the tests start (in process or as `turnout serve`)
# go to a directory of the test run, never the user's own data directory.
_DATA = tempfile.TemporaryDirectory(prefix="turnout-test-data-")
os.environ["TURNOUT_DATA_DIR"] = _DATA.name


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture
def upstream_b() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture
def turnout() -> Iterator[Callable[..., RunningTurnout]]:
    """Factory: `turnout(config_dict, clock=None)` starts a real Turnout (`clock`: the wall
    clock its breakers and limits read); all are stopped at teardown."""
    running: list[RunningTurnout] = []

    def start(config: dict[str, Any], clock: Callable[[], float] | None = None) -> RunningTurnout:
        server = RunningTurnout(config, clock=clock).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
