"""The Files and Batch APIs' answers against OpenAI's own OpenAPI description (the vendored
subset, tests/openapi/): every body a running Turnout answers -- File objects, file lists
(paged, and empty), deletions, Batch objects in each state (validating, in_progress,
completed with `model` and `usage`, failed with `errors`, cancelling, cancelled), batch
lists -- and every error, which must be the spec's `ErrorResponse`, are valid JSON Schema
instances of the spec's schemas, `$ref`s resolved within the spec.

The spec (2.3.0) has no schema for a batch's output or error file lines (older versions'
`BatchRequestOutput` is gone), so `OUTPUT_LINE` below writes down the line OpenAI's batch
guide documents; the `body` of each answered line is checked against the spec's chat
completion response, that of each refused line against `ErrorResponse`.

Every wait polls with a deadline; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.openapi.spec import validator
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
KEY = "sk-spec-conformance"
CHAT = "/v1/chat/completions"
MAX_FILE_BYTES = 4096
DEADLINE_S = 30.0
#: One line of a batch's output or error file, as OpenAI's batch guide documents it.
OUTPUT_LINE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "custom_id", "response", "error"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "custom_id": {"type": "string"},
        "response": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["status_code", "request_id", "body"],
                    "additionalProperties": False,
                    "properties": {
                        "status_code": {"type": "integer"},
                        "request_id": {"type": "string"},
                        "body": {"type": "object"},
                    },
                },
            ]
        },
        "error": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
            ]
        },
    },
}


def conforms(schema: str, body: Any) -> None:
    """`body` is valid against the spec's schema `schema`."""
    _valid(validator(schema), schema, body)


def line_conforms(item: Any) -> None:
    """`item` is a valid line of an output or error file."""
    _valid(Draft202012Validator(OUTPUT_LINE), "output line", item)


def _valid(check: Draft202012Validator, what: str, body: Any) -> None:
    """Every violation, with its place, in the failure."""
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in check.iter_errors(body)
    ]
    assert problems == [], f"not a valid {what}: {problems}\n{json.dumps(body, indent=1)}"


def answer(response: httpx.Response, schema: str) -> dict[str, Any]:
    """A 200 whose JSON body is a valid `schema`."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    conforms(schema, body)
    return body


def enveloped(response: httpx.Response, status: int) -> dict[str, Any]:
    """An error with `status`, in the spec's `ErrorResponse` envelope."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    conforms("ErrorResponse", body)
    return body


def refused(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    """An error with `status`, in the spec's `ErrorResponse` envelope, naming `param`."""
    body = enveloped(response, status)
    assert body["error"]["param"] == param, body
    return body


@pytest.fixture
def server(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> RunningTurnout:
    return turnout(
        simple_config(
            {"up": upstream.base_url},
            teams={"t": {"keys": [KEY]}},
            batches={"poll_s": 0.1},
            storage={"max_file_bytes": MAX_FILE_BYTES},
        )
    )


@pytest.fixture
def http(server: RunningTurnout) -> httpx.Client:
    return server.http(headers={"authorization": f"Bearer {KEY}"})


def jsonl(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def chat_line(custom_id: str, model: str = "m") -> dict[str, Any]:
    messages = [{"role": "user", "content": custom_id}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": messages},
    }


def upload(
    http: httpx.Client, data: bytes, purpose: str = "batch", **fields: str
) -> httpx.Response:
    return http.post(
        "/v1/files", files={"file": ("input.jsonl", data)}, data={"purpose": purpose, **fields}
    )


def create_batch(http: httpx.Client, file_id: str, endpoint: str = CHAT) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    created = answer(http.post("/v1/batches", json=body), "Batch")
    assert created["status"] == "validating"
    return created


def wait_for(http: httpx.Client, batch_id: str, statuses: set[str]) -> dict[str, Any]:
    """The batch, once its status is one of `statuses` (validated at every look)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        batch = answer(http.get(f"/v1/batches/{batch_id}"), "Batch")
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch never {statuses}: {batch}"
        time.sleep(0.02)


def file_lines(http: httpx.Client, file_id: str) -> list[dict[str, Any]]:
    content = http.get(f"/v1/files/{file_id}/content")
    assert content.status_code == 200, content.text
    return [json.loads(line) for line in content.text.splitlines()]


# ---- files ----------------------------------------------------------------------------


def test_file_answers_conform(http: httpx.Client) -> None:
    kept = answer(upload(http, b"hello", "user_data"), "OpenAIFile")
    expiring = answer(
        upload(
            http,
            b"bye",
            "assistants",
            **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
        ),
        "OpenAIFile",
    )
    batch_input = answer(upload(http, jsonl(chat_line("a"))), "OpenAIFile")
    assert expiring["expires_at"] == expiring["created_at"] + 3600
    assert (kept["bytes"], batch_input["purpose"]) == (5, "batch")

    first = answer(http.get("/v1/files", params={"limit": 1}), "ListFilesResponse")
    assert first["has_more"] is True
    assert first["first_id"] == first["last_id"] == first["data"][0]["id"]
    rest = answer(
        http.get("/v1/files", params={"limit": 10, "after": first["last_id"]}),
        "ListFilesResponse",
    )
    assert rest["has_more"] is False
    assert (rest["first_id"], rest["last_id"]) == (rest["data"][0]["id"], rest["data"][-1]["id"])
    ids = {f["id"] for f in [*first["data"], *rest["data"]]}
    assert ids == {kept["id"], expiring["id"], batch_input["id"]}
    ascending = answer(http.get("/v1/files", params={"order": "asc"}), "ListFilesResponse")
    assert len(ascending["data"]) == 3
    none = answer(http.get("/v1/files", params={"purpose": "vision"}), "ListFilesResponse")
    assert (none["data"], none["has_more"]) == ([], False)

    assert answer(http.get(f"/v1/files/{kept['id']}"), "OpenAIFile") == kept
    assert http.get(f"/v1/files/{kept['id']}/content").content == b"hello"
    deleted = answer(http.delete(f"/v1/files/{kept['id']}"), "DeleteFileResponse")
    assert deleted == {"id": kept["id"], "object": "file", "deleted": True}


def test_file_errors_conform(server: RunningTurnout, http: httpx.Client) -> None:
    stranger = server.http(headers={"authorization": "Bearer sk-nobody"})
    refused(stranger.get("/v1/files"), 401, None)
    refused(upload(http, b"x", "homework"), 400, "purpose")
    refused(
        http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"x")}), 400, "file"
    )
    refused(upload(http, b"{not json\n"), 400, "file")
    refused(upload(http, b"x" * (MAX_FILE_BYTES + 1), "user_data"), 413, "file")
    expiry = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "5"}
    refused(upload(http, b"x", "user_data", **expiry), 400, "expires_after.seconds")
    refused(http.get("/v1/files", params={"limit": 0}), 400, "limit")
    # Refused by the framework's own parameter checks, and a method no route has.
    enveloped(http.get("/v1/files", params={"limit": "many"}), 400)
    enveloped(http.get("/v1/files", params={"order": "sideways"}), 400)
    enveloped(http.put("/v1/files"), 405)
    refused(
        http.post("/v1/files", content=b"x", headers={"content-type": "text/plain"}), 400, "file"
    )
    for missing in (
        http.get("/v1/files/file-missing"),
        http.get("/v1/files/file-missing/content"),
        http.delete("/v1/files/file-missing"),
    ):
        refused(missing, 404, "id")


# ---- batches --------------------------------------------------------------------------


def test_batch_answers_conform_through_its_lifecycle(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    # Slow answers keep the batch in progress long enough to be seen there.
    upstream.set_default(Ok(delay=2.0))
    file_id = answer(
        upload(http, jsonl(chat_line("a"), chat_line("b"), chat_line("c", "nope"))), "OpenAIFile"
    )["id"]
    created = create_batch(http, file_id)

    running = wait_for(http, created["id"], {"in_progress"})
    assert running["request_counts"]["total"] == 3
    done = wait_for(http, created["id"], {"completed", "failed", "cancelled", "expired"})
    assert done["status"] == "completed"
    assert done["model"] == "m"
    assert done["usage"]["total_tokens"] > 0
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}

    outputs = file_lines(http, done["output_file_id"])
    errors = file_lines(http, done["error_file_id"])
    assert sorted(x["custom_id"] for x in outputs) == ["a", "b"]
    assert [x["custom_id"] for x in errors] == ["c"]
    for item in outputs:
        line_conforms(item)
        conforms("CreateChatCompletionResponse", item["response"]["body"])
    for item in errors:
        line_conforms(item)
        conforms("ErrorResponse", item["response"]["body"])
    for file_id in (done["output_file_id"], done["error_file_id"]):
        answer(http.get(f"/v1/files/{file_id}"), "OpenAIFile")


def test_a_failed_a_cancelled_and_listed_batches_conform(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    file_id = answer(upload(http, jsonl(chat_line("a"), chat_line("b"))), "OpenAIFile")["id"]
    # Chat lines in an embeddings batch: the batch fails validation, naming each line.
    failed = wait_for(http, create_batch(http, file_id, "/v1/embeddings")["id"], {"failed"})
    assert [e["line"] for e in failed["errors"]["data"]] == [1, 2]

    upstream.set_default(Ok(delay=5.0))
    running = create_batch(http, file_id)
    wait_for(http, running["id"], {"in_progress"})
    cancelling = answer(http.post(f"/v1/batches/{running['id']}/cancel"), "Batch")
    assert cancelling["status"] in ("cancelling", "cancelled")
    cancelled = wait_for(http, running["id"], {"cancelled"})
    assert cancelled["cancelled_at"] >= cancelled["cancelling_at"]
    refused(http.post(f"/v1/batches/{failed['id']}/cancel"), 409, "batch_id")

    first = answer(http.get("/v1/batches", params={"limit": 1}), "ListBatchesResponse")
    assert first["has_more"] is True
    assert first["first_id"] == first["last_id"] == first["data"][0]["id"]
    rest = answer(
        http.get("/v1/batches", params={"after": first["last_id"]}), "ListBatchesResponse"
    )
    assert rest["has_more"] is False
    assert {b["id"] for b in [*first["data"], *rest["data"]]} == {failed["id"], running["id"]}


def test_an_empty_batch_list_conforms(http: httpx.Client) -> None:
    empty = answer(http.get("/v1/batches"), "ListBatchesResponse")
    assert (empty["data"], empty["has_more"]) == ([], False)


def test_batch_errors_conform(server: RunningTurnout, http: httpx.Client) -> None:
    stranger = server.http(headers={"authorization": "Bearer sk-nobody"})
    refused(stranger.get("/v1/batches"), 401, None)
    batch_input = answer(upload(http, jsonl(chat_line("a"))), "OpenAIFile")["id"]
    other = answer(upload(http, b"notes", "user_data"), "OpenAIFile")["id"]
    good = {"input_file_id": batch_input, "endpoint": CHAT, "completion_window": "24h"}
    for body, status, param in [
        ({**good, "input_file_id": None}, 400, "input_file_id"),
        ({**good, "input_file_id": "file-missing"}, 404, "input_file_id"),
        ({**good, "input_file_id": other}, 400, "input_file_id"),
        ({**good, "endpoint": "/v1/moderations"}, 400, "endpoint"),
        ({**good, "completion_window": "1h"}, 400, "completion_window"),
        ({**good, "metadata": {str(i): "v" for i in range(17)}}, 400, "metadata"),
        ({**good, "metadata": {"k": 1}}, 400, "metadata.k"),
        (
            {**good, "output_expires_after": {"anchor": "created_at", "seconds": 1}},
            400,
            "output_expires_after.seconds",
        ),
        ({**good, "priority": "high"}, 400, "priority"),
    ]:
        refused(http.post("/v1/batches", json=body), status, param)
    refused(http.post("/v1/batches", content=b"[1, 2]"), 400, None)
    refused(http.post("/v1/batches", content=b"{oops"), 400, None)
    refused(http.get("/v1/batches/batch_missing"), 404, "batch_id")
    refused(http.post("/v1/batches/batch_missing/cancel"), 404, "batch_id")
    refused(http.get("/v1/batches", params={"limit": 101}), 400, "limit")
    enveloped(http.get("/v1/batches", params={"limit": "many"}), 400)
    enveloped(http.delete("/v1/batches/batch_missing"), 405)
