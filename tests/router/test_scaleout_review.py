"""Review of the scale-out work (issue 13): the rules for several workers hold for every
app a worker builds, not only for the reloads of one that is running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policies.config import TurnoutConfig
from router.app import create_app
from router.exposure import Listener, OpenAccessRefused


def _local_config() -> TurnoutConfig:
    return TurnoutConfig.model_validate(
        {
            "state": {"per_worker": True},
            "providers": {"local": {"kind": "torch", "model": "smollm2-135m-instruct"}},
            "models": {"m": {"deployments": [{"provider": "local", "model": "m"}]}},
        }
    )


def test_a_worker_started_without_a_sampler_host_refuses_local_providers() -> None:
    """A worker that starts (or is respawned by uvicorn's supervisor after a crash) on a
    config file edited since `turnout serve` started, now naming local providers, has no
    sampler host: it must refuse, as a reload to that config is refused, rather than load
    its own copy of the model beside each other worker's."""
    with pytest.raises(OpenAccessRefused, match="sampler host"):
        create_app(_local_config(), listener=Listener("127.0.0.1", workers=2))


def test_one_worker_or_a_sampler_host_serves_local_providers() -> None:
    create_app(_local_config(), listener=Listener("127.0.0.1", workers=1))
    create_app(_local_config(), listener=Listener("127.0.0.1", workers=2, sampler_host="/x"))


def test_a_state_prefix_with_a_hash_tag_is_refused() -> None:
    """A `{…}` in the prefix would be every key's hash tag on Redis Cluster: a breaker and
    its window, a request's limits and every storage record would then share one slot on
    one master, or (an empty `{}`) be split apart so every script fails."""
    for prefix in ("turnout{}:", "{turnout}:"):
        with pytest.raises(ValueError, match="prefix"):
            TurnoutConfig.model_validate({"state": {"prefix": prefix}})


def test_an_inherited_sampler_host_socket_is_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`run` with one worker starts no host: a socket path inherited from the environment
    (another Turnout's, or anyone's) must not reach the worker, where it would turn local
    providers into remote ones pointed at it."""
    from router import server

    seen: dict[str, str | None] = {}

    def fake_granian(*_: object, **__: object) -> None:
        seen["host"] = os.environ.get(server._SAMPLERS_ENV)

    config = tmp_path / "c.yaml"
    config.write_text("models: {}\n")
    for name in vars(server).values():  # run() sets its variables: restore each after
        if isinstance(name, str) and name.startswith("TURNOUT_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(server.PARENT_ENV, raising=False)
    monkeypatch.setenv(server._SAMPLERS_ENV, str(tmp_path / "elsewhere.sock"))
    monkeypatch.setattr(server, "_run_granian", fake_granian)
    server.run(
        str(config),
        listener=Listener("127.0.0.1", workers=1),
        port=0,
        server="granian",
        log_level="info",
        reload=False,
    )
    assert seen == {"host": None}
