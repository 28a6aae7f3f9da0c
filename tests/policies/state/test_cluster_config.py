"""The three ways to name a Redis Cluster in `state`, what is refused, and that no node's
password reaches a display or escapes the configured secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.config import TurnoutConfig
from policies.policy_config import StateSettings
from policies.redaction import configured_secrets
from policies.redis_client import RedisAddress, connect
from policies.state.factory import display_url


def test_the_three_ways_and_plain_redis() -> None:
    by_flag = RedisAddress.of(StateSettings(redis_url="redis://h:7000", cluster=True))
    by_scheme = RedisAddress.of(StateSettings(redis_url="rediss+cluster://u:pw@h:7000"))
    by_nodes = RedisAddress.of(StateSettings(redis_cluster_nodes=["h1:7000", "redis://h2:7001"]))
    plain = RedisAddress.of(StateSettings(redis_url="redis://h:6379/0"))

    assert [a.cluster if a else None for a in (by_flag, by_scheme, by_nodes, plain)] == [
        True,
        True,
        True,
        False,
    ]
    assert by_scheme is not None
    assert by_scheme.urls() == ["rediss://u:pw@h:7000"]
    assert by_nodes is not None
    assert by_nodes.urls() == ["redis://h1:7000", "redis://h2:7001"]
    assert RedisAddress.of(StateSettings()) is None
    assert StateSettings(redis_cluster_nodes=["h1:7000"]).shared
    assert not StateSettings().shared


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"redis_url": "redis://h:1", "redis_cluster_nodes": ["h:2"]}, "exclusive"),
        ({"cluster": True}, "needs the cluster's address"),
        ({"redis_cluster_nodes": []}, "at least 1"),
    ],
)
def test_refused(settings: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        StateSettings.model_validate(settings)


def test_no_password_is_displayed_and_each_is_a_configured_secret() -> None:
    nodes = StateSettings(redis_cluster_nodes=["redis://u:s3cret@h1:7000?password=q", "h2:7001"])
    assert display_url(nodes) == "redis-cluster:redis://h1:7000,redis://h2:7001"
    one = StateSettings(redis_url="redis+cluster://:s3cret@h:7000/0")
    assert display_url(one) == "redis-cluster:redis://h:7000/0"
    assert display_url(StateSettings(redis_url="redis://:s3cret@h:6379/0")) == "redis://h:6379/0"
    assert display_url(StateSettings()) == "memory"
    config = TurnoutConfig.model_validate(
        {
            "providers": {},
            "models": {},
            "state": {"redis_cluster_nodes": ["redis://u:pw1@h1:1", "redis://:pw2@h2:2"]},
            "storage": {"single_replica": True},
        }
    )
    assert {"pw1", "pw2", "u"} <= configured_secrets(config)


async def test_a_cluster_client_takes_the_password_and_timeouts() -> None:
    address = RedisAddress(url="redis+cluster://u:s3cret@127.0.0.1:7000", cluster=True)
    client = connect(address, 0.25)
    kwargs = client.connection_kwargs  # type: ignore[union-attr]
    assert (kwargs["username"], kwargs["password"]) == ("u", "s3cret")
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    await client.aclose()
