"""A config reload keeps the running exporter when `telemetry:` is unchanged, and replaces
it when it changed: the old one is shut down (flushed) once its requests have ended, the
new one's spans carry the new settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.router.telemetry.otlp_receiver import OTLPReceiver
from tests.router.telemetry.traced import exported, one, telemetry
from tests.router.test_reload import ReloadingTurnout, wait_for, write
from tests.turnout_server import simple_config


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def test_a_reload_keeps_or_replaces_the_exporter_as_the_telemetry_section_says(
    tmp_path: Path, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="hi"))
    path = tmp_path / "turnout.yaml"
    config = simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    write(path, config)
    server = ReloadingTurnout(path)
    server.start()
    try:
        first = server.app.state.gateway.tracing
        assert first is not None
        config["retry"] = {**config["retry"], "attempts": 2}  # telemetry untouched
        write(path, config)
        assert server.reload()
        wait_for(lambda: server.app.state.gateway.config.retry.attempts == 2)
        assert server.app.state.gateway.tracing is first

        config["telemetry"] = telemetry(receiver.endpoint, service_name="renamed")
        write(path, config)
        assert server.reload()
        wait_for(lambda: server.app.state.gateway.tracing is not first)
        wait_for(lambda: first._closed)  # retired once the old gateway drained
        with server.client() as client:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        request = one(exported(server, receiver, 2), "server")
        assert request.resource["service.name"] == "renamed"
    finally:
        server.stop()
