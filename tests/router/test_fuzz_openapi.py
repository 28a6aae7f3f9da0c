"""Property-based fuzz of the running app with bodies generated from OpenAI's OpenAPI spec.

Schemathesis generates request bodies for POST /v1/chat/completions, /v1/completions and
/v1/embeddings from the vendored spec subset (tests/openapi/): valid ones (positive mode)
and ones that break the spec (negative mode). They go over real HTTP on loopback to a real
Turnout in front of the fake OpenAI and Anthropic upstreams, to a model with every option
forwarded, to one whose deployment lacks them all, and to Anthropic (in the emulate, drop
and strict translation modes), and whatever the body:

- Turnout answers without a 5xx (the fakes answer every request they accept, so a 5xx
  here is Turnout's own),
- every error is OpenAI's envelope (the spec's `ErrorResponse`, as JSON) whose `param`
  names a place in the request body,
- every 2xx body is valid against the spec's response schema, each SSE event of a stream
  included.

`derandomize` makes every run send the same bodies, so a failure reproduces in CI and
locally alike; the example counts keep the whole file at well under a minute."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from providers.capabilities import OVERRIDE_KEYS
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

SPEC = Path(__file__).parents[1] / "openapi" / "openai-subset.json"
#: The configured model the bodies of each endpoint name (most of the time: `flatmap_body`).
MODELS = {
    "/chat/completions": "fuzz-chat",
    "/completions": "fuzz-text",
    "/embeddings": "fuzz-embed",
}
#: Each endpoint's model also comes as `<model>-<mode>`: the same upstream declared without
#: any option it could lack, in each translation mode, so that bodies go through emulation
#: (fan-out, stop, echo, ...), dropping and refusal as well as straight forwarding. It keeps
#: `seed` and logprobs, which the `n` and `best_of` emulations need. Chat and completions
#: also come as `<model>-claude-<mode>`, served by the fake Anthropic Messages API.
TRANSLATIONS = ("emulate", "drop", "strict")
KEPT = {"completions", "chat", "embeddings", "stream", "non_streaming", "seed", "logprobs"}
NARROW = {key: False for key in OVERRIDE_KEYS - KEPT - {"top_logprobs"}}
ROUTED = {
    path: [
        name,
        *(f"{name}-{mode}" for mode in TRANSLATIONS),
        *(f"{name}-claude-{mode}" for mode in TRANSLATIONS if path != "/embeddings"),
    ]
    for path, name in MODELS.items()
}
UNKNOWN_MODEL = "fuzz-unknown"
#: Examples per endpoint and mode. Chat bodies are the slowest to generate (about ten times
#: the others' size), so chat gets fewer invalid ones; streams have a test of their own.
EXAMPLES = {
    ("/chat/completions", GenerationMode.POSITIVE): 150,
    ("/chat/completions", GenerationMode.NEGATIVE): 50,
    ("/completions", GenerationMode.POSITIVE): 150,
    ("/completions", GenerationMode.NEGATIVE): 100,
    ("/embeddings", GenerationMode.POSITIVE): 150,
    ("/embeddings", GenerationMode.NEGATIVE): 100,
}
STREAMED_EXAMPLES = 40
#: Required by the spec, so named by an error even where a (negative) body leaves them out.
REQUIRED = frozenset({"model", "messages", "prompt", "input"})


def error_param_names_the_body(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case[Any]
) -> bool | None:
    """An error's `param` points into what the client sent: one of its keys, or a path under
    one (`messages[1].role`), never anything of Turnout's own making."""
    if response.status_code < 400 or not isinstance(case.body, dict):
        return None
    try:
        param = response.json()["error"]["param"]
    except (ValueError, TypeError, KeyError):
        return None  # not the envelope: response_schema_conformance reports it
    if param is None:
        return None
    named = [*case.body, *REQUIRED]
    assert any(param == key or param.startswith((f"{key}.", f"{key}[")) for key in named), (
        f"the error's param {param!r} names nothing in the request body"
    )
    return True


CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    error_param_names_the_body,
]
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,  # nothing written into the repository
    # Spec-sized bodies are large and slow to generate; they are what is wanted here.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
#: The schema of one chunk of a stream: chat has one in the spec; for completions see
#: `_completion_chunk`.
STREAM_CHUNKS = {
    "/chat/completions": "CreateChatCompletionStreamResponse",
    "/completions": "CompletionStreamChunk",
}
_ERROR_RESPONSE = {
    "description": "Any error, in OpenAI's envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def _event_stream(chunk: str) -> dict[str, Any]:
    """OpenAPI 3.2's description of an event stream: each event's data is a JSON `chunk` or
    the final `[DONE]`, which comes exactly once."""
    data = {
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": f"#/components/schemas/{chunk}"},
    }
    done = {"type": "object", "properties": {"data": {"const": "[DONE]"}}, "required": ["data"]}
    return {
        "schema": {"type": "array", "contains": done, "minContains": 1, "maxContains": 1},
        "itemSchema": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"oneOf": [{"const": "[DONE]"}, data]}},
        },
    }


def _completion_chunk(schemas: dict[str, Any]) -> dict[str, Any]:
    """The spec describes no completions stream; OpenAI streams `CreateCompletionResponse`
    objects whose choices have `finish_reason: null` until their last chunk."""
    chunk: dict[str, Any] = copy.deepcopy(schemas["CreateCompletionResponse"])
    choice = chunk["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    return chunk


def fuzz_spec() -> dict[str, Any]:
    """The vendored subset with what the spec leaves implicit made explicit, so that
    schemathesis checks it: every 4xx/5xx answer is an `ErrorResponse`, a streamed answer
    is a sequence of chunk events (under OpenAPI 3.1 the `schema` given for
    text/event-stream would be read as the schema of the SSE event object itself), and an
    embedding may be base64."""
    spec: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    schemas["CompletionStreamChunk"] = _completion_chunk(schemas)
    # The spec gives an embedding as floats only; with `encoding_format: base64` OpenAI
    # sends the little-endian float32 bytes, base64-encoded, as a string.
    vector = schemas["Embedding"]["properties"]["embedding"]
    base64 = {"type": "string", "contentEncoding": "base64"}
    schemas["Embedding"]["properties"]["embedding"] = {"anyOf": [vector, base64]}
    # The subset also holds the Files and Batch APIs (fuzzed in tests/router/batches/).
    for path in MODELS:
        responses = spec["paths"][path]["post"]["responses"]
        responses["4XX"] = responses["5XX"] = _ERROR_RESPONSE
        if path in STREAM_CHUNKS:
            responses["200"]["content"]["text/event-stream"] = _event_stream(STREAM_CHUNKS[path])
    return spec


def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Point most bodies at the endpoint's configured model, so that they get past routing
    to the upstream, and some (about one in twelve) at an unknown one (404). A `model` that
    is not a string (negative mode) is kept: it must be refused with 400."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return st.just(body)
    assert context.operation is not None  # always set for body hooks
    known = st.sampled_from(ROUTED[context.operation.path])
    # Hypothesis draws small integers far more often than large ones (here, where the body
    # is drawn first), so the top fifth of the range comes out about one time in twelve.
    unknown = st.integers(0, 99).map(lambda i: i >= 80)
    return st.tuples(known, unknown).map(
        lambda pick: {**body, "model": UNKNOWN_MODEL if pick[1] else pick[0]}
    )


def turnout_config(openai: str, anthropic: str) -> dict[str, Any]:
    providers = {
        "fake": {"kind": "openai", "base_url": openai},
        "claude": {"kind": "anthropic", "base_url": anthropic, "api_key": "sk-ant-fuzz"},
    }
    models: dict[str, Any] = {}
    for path, name in MODELS.items():
        models[name] = {"deployments": [{"provider": "fake", "model": f"{name}-upstream"}]}
        for mode in TRANSLATIONS:
            narrow = {"provider": "fake", "model": f"{name}-narrow", "capabilities": NARROW}
            models[f"{name}-{mode}"] = {"translation": mode, "deployments": [narrow]}
            if f"{name}-claude-{mode}" in ROUTED[path]:
                claude = {"provider": "claude", "model": "claude-fuzz"}
                models[f"{name}-claude-{mode}"] = {"translation": mode, "deployments": [claude]}
    return simple_config({}, providers=providers, models=models)


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningTurnout]:
    with FakeOpenAIUpstream() as openai, FakeAnthropicUpstream() as anthropic:
        turnout = RunningTurnout(turnout_config(openai.base_url, anthropic.base_url))
        turnout.start()
        try:
            yield turnout
        finally:
            turnout.stop()


@pytest.fixture(scope="module")
def api_schema() -> schemathesis.BaseSchema:
    # Streams are read to the end (the default stops after 20 events): the stream checks
    # need the final `[DONE]`, and a cut connection is not what is being tested.
    config = schemathesis.Config.from_dict({"max-stream-events": 10_000})
    schema = schemathesis.openapi.from_dict(fuzz_spec(), config=config)
    schema.hook(flatmap_body)
    return schema


def _call_and_check(gateway: RunningTurnout, case: Case[Any]) -> None:
    response = case.call(base_url=gateway.base_url, timeout=20)
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize(("path", "mode"), list(EXAMPLES), ids=lambda v: str(v).strip("/"))
def test_fuzz_openapi(
    gateway: RunningTurnout, api_schema: schemathesis.BaseSchema, path: str, mode: GenerationMode
) -> None:
    @settings(FUZZ, max_examples=EXAMPLES[path, mode])
    @given(case=api_schema[path]["POST"].as_strategy(generation_mode=mode))
    def fuzz(case: Case[Any]) -> None:
        _call_and_check(gateway, case)

    fuzz()


def _streamed(case: Case[Any]) -> Case[Any]:
    if isinstance(case.body, dict):
        case.body["stream"] = True
    return case


@pytest.mark.parametrize("path", list(STREAM_CHUNKS), ids=lambda v: str(v).strip("/"))
def test_fuzz_openapi_streamed(
    gateway: RunningTurnout, api_schema: schemathesis.BaseSchema, path: str
) -> None:
    """Valid bodies with `stream: true` (which generated bodies seldom ask for): every event
    a valid chunk, then one `[DONE]`."""
    strategy = api_schema[path]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE)

    @settings(FUZZ, max_examples=STREAMED_EXAMPLES)
    @given(case=strategy.map(_streamed))
    def fuzz(case: Case[Any]) -> None:
        _call_and_check(gateway, case)

    fuzz()
