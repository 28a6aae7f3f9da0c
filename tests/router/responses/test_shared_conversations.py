"""Two replicas sharing Redis (and a bucket, which a shared Redis requires) share every
stored response: a conversation begun on one continues on the other at once, and either
can read, list and delete it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from policies.storage.settings import S3Settings
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.redis_server import redis_url as redis_url
from tests.s3_server import s3_server as s3_server
from tests.s3_server import s3_settings as s3_settings
from tests.turnout_server import RunningTurnout, simple_config


def test_a_conversation_moves_between_replicas(
    turnout: Callable[[dict[str, Any]], RunningTurnout],
    upstream: FakeOpenAIUpstream,
    redis_url: str,
    s3_settings: S3Settings,
) -> None:
    prefix = f"resp-{uuid.uuid4().hex}:"
    config = simple_config(
        {"up": upstream.base_url},
        state={"redis_url": redis_url, "prefix": prefix},
        storage={"s3": {**s3_settings.model_dump(), "prefix": prefix}},
    )
    one, two = turnout(config), turnout(config)

    with one.client() as first, two.client() as second:
        opened = first.responses.create(model="m", input="the code word is plum")
        followed = second.responses.create(
            model="m", input="what was the code word?", previous_response_id=opened.id
        )
        assert first.responses.retrieve(followed.id).previous_response_id == opened.id
        assert second.responses.retrieve(opened.id).output_text == opened.output_text
        second.responses.delete(opened.id)
        assert followed.status == "completed"

    sent = [r.json for r in upstream.requests if r.path.endswith("/chat/completions")]
    said = [str(m["content"]) for m in sent[-1]["messages"]]
    assert any("the code word is plum" in text for text in said)
    assert "echo: the code word is plum" in said
