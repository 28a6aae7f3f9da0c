"""Every request property of OpenAI's chat completions, completions and embeddings that the
vendored spec documents is modelled (and so validated) by Turnout's schemas, nested
objects included: a newer spec with a property Turnout lacks fails here."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from router.schemas.chat import ChatCompletionRequest
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest
from tests.openapi.spec import SpecWalk, document

REQUESTS = [
    ("CreateChatCompletionRequest", ChatCompletionRequest),
    ("CreateCompletionRequest", CompletionRequest),
    ("CreateEmbeddingRequest", EmbeddingRequest),
]


@pytest.mark.parametrize(("name", "model"), REQUESTS, ids=[n for n, _ in REQUESTS])
def test_every_request_property_of_the_spec_is_modelled(name: str, model: type[BaseModel]) -> None:
    spec = document()
    walk = SpecWalk(spec)
    walk.check({"$ref": f"#/components/schemas/{name}"}, [model], name)
    assert list(dict.fromkeys(walk.missing)) == []


def test_the_walk_notices_a_missing_property_at_the_top_and_nested() -> None:
    class Part(BaseModel):
        type: Literal["text"]

    class Message(BaseModel):
        role: Literal["user"]
        content: list[Part]

    class Narrow(BaseModel):
        messages: list[Message]

    spec = document()
    walk = SpecWalk(spec)
    walk.check({"$ref": "#/components/schemas/CreateChatCompletionRequest"}, [Narrow], "chat")
    assert {"chat.model", "chat.reasoning_effort", "chat.messages[].content[].text"} <= set(
        walk.missing
    )
    assert not any(m.startswith("chat.messages[].role") for m in walk.missing)
    no_tool_message = "chat.messages[] (no model for an object with ['content', 'role', "
    assert f"{no_tool_message}'tool_call_id'])" in walk.missing


def test_the_walk_notices_an_enumerated_value_the_model_refuses() -> None:
    class Narrow(BaseModel):
        reasoning_effort: Literal["low", "high"] | None = None
        modalities: list[Literal["text"]] | None = None

    walk = SpecWalk(document())
    walk.check({"$ref": "#/components/schemas/CreateChatCompletionRequest"}, [Narrow], "chat")
    assert "chat.reasoning_effort (values ['max', 'medium', 'minimal', 'none', 'xhigh'])" in (
        walk.missing
    )
    assert "chat.modalities (values ['audio'])" in walk.missing


def test_the_vendored_request_schemas_are_the_ones_the_paths_use() -> None:
    paths = document()["paths"]
    for path, name in [
        ("/chat/completions", "CreateChatCompletionRequest"),
        ("/completions", "CreateCompletionRequest"),
        ("/embeddings", "CreateEmbeddingRequest"),
    ]:
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{name}"}
