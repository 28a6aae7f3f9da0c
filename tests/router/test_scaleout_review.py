"""Review of the scale-out work (issue 13): the rules for several workers hold for every
app a worker builds, not only for the reloads of one that is running."""

from __future__ import annotations

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
