"""Checks of the Responses door's answers against OpenAI's own description of them: the
vendored OpenAPI subset (tests/openapi/) as JSON Schema, no field the spec does not name at
the top of a Response or an event, and the official SDK's typed models."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import httpx
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.openapi.spec import Schema, document, validator

#: The SDK's parser of one stream event (a union discriminated by `type`).
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
#: Fields of a Response that its schema leaves out but OpenAI answers with: `store` is in
#: every example answer of `POST /responses` in the spec (its `x-oaiMeta`).
ANSWERED_UNDESCRIBED = frozenset({"store"})
#: The SDK's model of each spec schema checked here.
SDK_MODELS: dict[str, Any] = {"Response": Response, "ResponseItemList": ResponseItemList}


def conforms(name: str, body: Any) -> None:
    """`body` is a valid instance of the spec's schema `name`, every violation named."""
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
        for e in validator(name).iter_errors(body)
    ]
    assert problems == [], f"not a valid {name}: {problems}\n{json.dumps(body, indent=1)}"
    if name in SDK_MODELS:
        SDK_MODELS[name].model_validate(body)


def response_conforms(body: dict[str, Any]) -> None:
    """A valid `Response`, with only the fields the spec names."""
    conforms("Response", body)
    unknown = set(body) - properties("Response") - ANSWERED_UNDESCRIBED
    assert unknown == set(), f"fields the spec does not name: {sorted(unknown)}"


def event_conforms(event: dict[str, Any]) -> None:
    """A valid `ResponseStreamEvent`, with only the fields its own schema names (the
    Response it carries likewise), and one the SDK parses as the event its `type` says."""
    conforms("ResponseStreamEvent", event)
    schema = event_schemas().get(event["type"])
    assert schema is not None, f"no event of type {event['type']!r} in the spec"
    unknown = set(event) - properties(schema)
    assert unknown == set(), f"{event['type']}: fields the spec does not name: {sorted(unknown)}"
    if "response" in event:
        response_conforms(event["response"])
    assert EVENTS.validate_python(event).type == event["type"]


def error_conforms(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error with `status`, its body the spec's `ErrorResponse`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    conforms("ErrorResponse", body)
    return body


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The events of a whole Responses stream: each `data:` line, checked against the
    `event:` line before it."""
    assert response.headers["content-type"].startswith("text/event-stream")
    return list(_events(response.iter_lines()))


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            event: dict[str, Any] = json.loads(line[len("data: ") :])
            assert event["type"] == name, f"event: {name} carries {event['type']}"
            yield event


@functools.cache
def event_schemas() -> dict[str, str]:
    """Each event `type` → the name of its schema in the spec."""
    schemas = document()["components"]["schemas"]
    found: dict[str, str] = {}
    for option in schemas["ResponseStreamEvent"]["anyOf"]:
        name = option["$ref"].rsplit("/", 1)[-1]
        for kind in schemas[name]["properties"]["type"].get("enum", ()):
            found[kind] = name
    return found


@functools.cache
def properties(name: str) -> frozenset[str]:
    """The property names the spec's schema `name` gives an object (through `allOf`)."""
    schemas = document()["components"]["schemas"]
    return frozenset(_properties(schemas, schemas[name]))


def _properties(schemas: dict[str, Schema], node: Schema) -> set[str]:
    if "$ref" in node:
        return _properties(schemas, schemas[node["$ref"].rsplit("/", 1)[-1]])
    found = set(node.get("properties") or {})
    for part in node.get("allOf", ()):
        found |= _properties(schemas, part)
    return found
