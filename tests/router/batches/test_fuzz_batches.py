"""Property-based fuzz of `POST /v1/batches` with bodies generated from OpenAI's OpenAPI spec
(`CreateBatchRequest` in the vendored subset, tests/openapi/): valid ones (positive mode)
and ones that break the spec (negative mode), over real HTTP on loopback to a real Turnout
in front of the fake OpenAI upstream. Whatever the body:

- Turnout answers without a 5xx,
- every error is OpenAI's envelope (the spec's `ErrorResponse`), and for a body that is a
  JSON object its `param` names one of the body's fields (or a place under one:
  `metadata.<key>`), or a required one the body lacks,
- every 2xx body is a valid `Batch`, and so is the batch once it has ended.

A generated `input_file_id` names no real file, so most bodies get the id of a batch file
uploaded beforehand, the one whose lines call the body's `endpoint` (chat, completions,
embeddings), and most of those whose `endpoint` is one Turnout does not run get one it
does: those bodies reach the checks past the first two, the 2xx path and the runner. The
rest keep theirs and must get a 400 naming `endpoint` or a 404 naming `input_file_id`.

`derandomize` makes every run send the same bodies; the example counts keep the file well
under a minute."""

from __future__ import annotations

import io
import json
import time
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

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.openapi.spec import validator
from tests.turnout_server import RunningTurnout, simple_config

SPEC = Path(__file__).parents[2] / "openapi" / "openai-subset.json"
EXAMPLES = {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 80}
#: A batch file whose one line calls each endpoint Turnout runs batches for.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "m", "prompt": "hi"},
    "/v1/embeddings": {"model": "m", "input": "hi"},
}
REQUIRED = frozenset({"input_file_id", "endpoint", "completion_window"})
ENDED = frozenset({"completed", "failed", "cancelled", "expired"})
DEADLINE_S = 20.0
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_ERROR_RESPONSE = {
    "description": "Any error, in OpenAI's envelope",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def error_param_names_the_body(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case[Any]
) -> bool | None:
    """An error for a JSON object names one of its fields (or a required one it lacks)."""
    if response.status_code < 400 or not isinstance(case.body, dict):
        return None
    try:
        param = response.json()["error"]["param"]
    except (ValueError, TypeError, KeyError):
        return None  # not the envelope: response_schema_conformance reports it
    named = [*case.body, *REQUIRED]
    assert isinstance(param, str), f"the error names no field: {response.text}"
    assert any(param == key or param.startswith(f"{key}.") for key in named), (
        f"the error's param {param!r} names nothing in the request body"
    )
    return True


CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    error_param_names_the_body,
]


def fuzz_spec() -> dict[str, Any]:
    """The vendored subset, with what the spec leaves implicit made explicit so that
    schemathesis checks it: every 4xx/5xx answer is an `ErrorResponse`."""
    spec: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    responses = spec["paths"]["/batches"]["post"]["responses"]
    responses["4XX"] = responses["5XX"] = _ERROR_RESPONSE
    return spec


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningTurnout]:
    with FakeOpenAIUpstream() as upstream:
        config = simple_config({"up": upstream.base_url}, batches={"poll_s": 0.1})
        turnout = RunningTurnout(config)
        turnout.start()
        try:
            yield turnout
        finally:
            turnout.stop()


@pytest.fixture(scope="module")
def batch_files(gateway: RunningTurnout) -> dict[str, str]:
    """The id of an uploaded batch file for each endpoint Turnout runs batches for."""
    client = gateway.client()
    files = {}
    for url, body in BODIES.items():
        line = {"custom_id": "only", "method": "POST", "url": url, "body": body}
        data = io.BytesIO(json.dumps(line).encode() + b"\n")
        files[url] = client.files.create(file=("in.jsonl", data), purpose="batch").id
    return files


@pytest.fixture(scope="module")
def api_schema() -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(fuzz_spec())


def aimed(case: Case[Any], pick: int, files: dict[str, str]) -> Case[Any]:
    """Point most bodies past the first checks: unless `pick` (0 to 99) is 3 modulo 4, an
    `endpoint` Turnout does not run (five of the spec's eight) becomes one it runs; unless
    it is 4 modulo 5, an `input_file_id` becomes the id of the batch file for the body's
    endpoint. (Hypothesis draws small integers most often: a modulo spreads them.)"""
    body = case.body
    if not isinstance(body, dict):
        return case
    endpoint = body.get("endpoint")
    if isinstance(endpoint, str) and endpoint not in files and pick % 4 != 3:
        body = {**body, "endpoint": list(files)[pick % len(files)]}
    if isinstance(body.get("input_file_id"), str) and pick % 5 != 4:
        chosen = files.get(str(body.get("endpoint")), files["/v1/chat/completions"])
        body = {**body, "input_file_id": chosen}
    case.body = body
    return case


def wait_until_ended(gateway: RunningTurnout, batch_id: str) -> dict[str, Any]:
    """The batch once it has ended: each one created is run before the next example, so
    the runner never has more than one to do."""
    deadline = time.monotonic() + DEADLINE_S
    with gateway.http() as http:
        while True:
            batch: dict[str, Any] = http.get(f"/v1/batches/{batch_id}").json()
            if batch.get("status") in ENDED:
                return batch
            assert time.monotonic() < deadline, f"the batch never ended: {batch}"
            time.sleep(0.02)


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_fuzz_create_batch(
    gateway: RunningTurnout,
    api_schema: schemathesis.BaseSchema,
    batch_files: dict[str, str],
    mode: GenerationMode,
) -> None:
    created: list[str] = []
    is_batch = validator("Batch")

    @settings(FUZZ, max_examples=EXAMPLES[mode])
    @given(
        case=api_schema["/batches"]["POST"].as_strategy(generation_mode=mode),
        pick=st.integers(0, 99),
    )
    def fuzz(case: Case[Any], pick: int) -> None:
        case = aimed(case, pick, batch_files)
        response = case.call(base_url=gateway.base_url, timeout=20)
        case.validate_response(response, checks=CHECKS)
        if response.status_code == 200:
            batch_id = response.json()["id"]
            created.append(batch_id)
            ended = wait_until_ended(gateway, batch_id)
            is_batch.validate(ended)

    fuzz()
    if mode is GenerationMode.POSITIVE:
        # The substitution works: a good share of valid bodies created a batch.
        assert len(created) >= EXAMPLES[mode] // 10, created
