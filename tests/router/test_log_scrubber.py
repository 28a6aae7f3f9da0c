"""The log's scrubbing processor masks the secrets of the config being served: the one
the app started with, then each one a reload brings (tests/policies/
test_redaction_variants_e2e.py reads a real server's log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.redaction import MASK
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import simple_config


def config(up: FakeOpenAIUpstream, header: str) -> dict[str, Any]:
    provider = {"kind": "openai", "base_url": up.base_url, "headers": {"x-org": header}}
    return simple_config({"a": up.base_url}, providers={"a": provider})


def test_the_log_scrubber_follows_reloads(tmp_path: Path) -> None:
    path = tmp_path / "turnout.yaml"
    with FakeOpenAIUpstream() as up:
        write(path, config(up, "first-Header-Value1"))
        server = ReloadingTurnout(path)
        server.start()
        try:
            scrub = server.app.state.log_scrubber

            def logged(text: str) -> Any:
                return scrub(None, "info", {"event": "x", "said": [text]})["said"][0]

            assert logged("got FIRST-HEADER-VALUE1") == f"got {MASK}"
            write(path, config(up, "second-Header-Value2"))
            assert server.reload()
            assert logged("got second-header-value2") == f"got {MASK}"
            assert logged("auth Bearer abc.def") == f"auth Bearer {MASK}"
        finally:
            server.stop()
