"""OpenAI's Files API end to end through the official SDK: upload, list (filter, pages,
order), retrieve, byte-exact content, delete; each team (and each top-level key) sees only
its own files; the size limit; the upload's own errors; a batch input file checked line
by line at upload."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

MAX_FILE_BYTES = 4096
KEYS = {"a": "sk-team-a", "b": "sk-team-b", "lister": "sk-team-lister", "solo": "sk-solo"}
BINARY = bytes(range(256)) * 4 + b"\r\n\x00\xff\n"  # every byte value, CR/LF and NULs


@dataclass
class Server:
    turnout: RunningTurnout
    storage: Path

    def client(self, who: str) -> openai.OpenAI:
        return self.turnout.client(KEYS[who])

    def stored_blobs(self) -> list[str]:
        """Every file under the blob directory, temporary ones included."""
        files = self.storage / "files"
        return sorted(p.name for p in files.iterdir()) if files.exists() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    storage = tmp_path_factory.mktemp("files-api")
    with FakeOpenAIUpstream() as up:
        config = simple_config(
            {"up": up.base_url},
            keys=[{"key": KEYS["solo"]}],
            teams={name: {"keys": [KEYS[name]]} for name in ("a", "b", "lister")},
            storage={"path": str(storage), "max_file_bytes": MAX_FILE_BYTES},
        )
        turnout = RunningTurnout(config).start()
        try:
            yield Server(turnout, storage)
        finally:
            turnout.stop()


def upload(client: openai.OpenAI, data: bytes, purpose: Any = "assistants", **kw: Any) -> Any:
    return client.files.create(file=("data.bin", io.BytesIO(data)), purpose=purpose, **kw)


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()


def chat_line(custom_id: str, **changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(changes)
    return line


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return error


# ---- the file's life -----------------------------------------------------------------


def test_upload_retrieve_content_and_delete_binary_bytes(server: Server) -> None:
    client = server.client("a")

    created = upload(client, BINARY, "assistants")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(BINARY)
    assert created.filename == "data.bin"
    assert created.purpose == "assistants"
    assert created.status == "processed"
    assert created.created_at > 0
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == BINARY

    deleted = client.files.delete(created.id)

    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)
    assert created.id not in [f.id for f in client.files.list()]
    assert created.id not in server.stored_blobs()


def test_content_of_a_file_larger_than_one_read_is_byte_exact(server: Server) -> None:
    client = server.client("a")
    data = bytes((i * 7919) % 256 for i in range(MAX_FILE_BYTES))  # exactly the limit

    created = upload(client, data)

    assert created.bytes == MAX_FILE_BYTES
    assert client.files.content(created.id).read() == data


def test_list_filters_by_purpose_pages_and_orders(server: Server) -> None:
    client = server.client("lister")
    purposes = ["assistants", "vision", "assistants", "user_data", "assistants"]
    ids = {upload(client, f"file {i}".encode(), p).id: p for i, p in enumerate(purposes)}

    listed = client.files.list(order="asc")
    ascending = [f.id for f in listed.data]

    assert sorted(ascending) == sorted(ids)
    keys = [(f.created_at, f.id) for f in listed.data]
    assert keys == sorted(keys)  # (created_at, id): ids break a tie within one second
    assert [f.id for f in client.files.list(order="desc").data] == ascending[::-1]
    assistants = [f.id for f in client.files.list(purpose="assistants", order="asc").data]
    assert assistants == [i for i in ascending if ids[i] == "assistants"]
    assert [f.id for f in client.files.list(purpose="vision").data] == [
        i for i in ascending if ids[i] == "vision"
    ]
    assert client.files.list(purpose="fine-tune").data == []


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_list_pages_with_limit_and_after(server: Server, order: Any) -> None:
    client = server.client("lister")
    for i in range(3):
        upload(client, f"page {i}".encode())
    everything = [f.id for f in client.files.list(order=order).data]

    pages = []
    after: Any = openai.omit
    while True:
        page = client.files.list(order=order, limit=2, after=after)
        pages.append([f.id for f in page.data])
        assert page.has_more is (len(everything) > 2 * len(pages))
        if not page.has_more:
            break
        after = pages[-1][-1]

    assert [i for page in pages for i in page] == everything
    assert [len(page) for page in pages[:-1]] == [2] * (len(pages) - 1)
    # The SDK's own pagination follows `after` the same way.
    assert [f.id for f in client.files.list(order=order, limit=2)] == everything


def test_list_limit_out_of_range_is_a_400(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        server.client("a").files.list(limit=0)

    assert error_of(refused.value)["param"] == "limit"


# ---- who sees what -----------------------------------------------------------------------


def test_another_team_gets_404_for_everything_of_a_file(server: Server) -> None:
    mine = upload(server.client("a"), b"team a's secret")
    other = server.client("b")

    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError) as hidden:
            call(mine.id)
        assert mine.id in error_of(hidden.value)["message"]
    assert mine.id not in [f.id for f in other.files.list().data]
    # Still there, unchanged, for its owner.
    assert server.client("a").files.content(mine.id).read() == b"team a's secret"


def test_a_top_level_key_is_its_own_owner(server: Server) -> None:
    solo, team = server.client("solo"), server.client("a")
    solos = upload(solo, b"solo's")
    teams = upload(team, b"team's")

    assert solos.id in [f.id for f in solo.files.list().data]
    assert teams.id not in [f.id for f in solo.files.list().data]
    assert solos.id not in [f.id for f in team.files.list().data]
    with pytest.raises(openai.NotFoundError):
        team.files.retrieve(solos.id)
    with pytest.raises(openai.NotFoundError):
        solo.files.content(teams.id)


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_unauthenticated_calls_are_401(server: Server, key: str | None) -> None:
    mine = upload(server.client("a"), b"anyone?")
    headers = {} if key is None else {"authorization": f"Bearer {key}"}

    with server.turnout.http(headers=headers) as http:
        answers = [
            http.get("/v1/files"),
            http.get(f"/v1/files/{mine.id}"),
            http.get(f"/v1/files/{mine.id}/content"),
            http.delete(f"/v1/files/{mine.id}"),
            http.post("/v1/files", files={"file": ("x", b"x")}, data={"purpose": "assistants"}),
        ]

    assert [a.status_code for a in answers] == [401] * len(answers)
    assert all("error" in a.json() for a in answers)
    assert server.client("a").files.content(mine.id).read() == b"anyone?"


# ---- what an upload may be ---------------------------------------------------------------


@pytest.mark.parametrize("size", [MAX_FILE_BYTES + 1, MAX_FILE_BYTES + 200_000])
def test_a_file_past_the_limit_is_413_and_nothing_is_kept(server: Server, size: int) -> None:
    """Just past it (cut while streaming) and far past it (refused by its length)."""
    client = server.client("a")
    before, listed = server.stored_blobs(), [f.id for f in client.files.list().data]

    with pytest.raises(openai.APIStatusError) as refused:
        upload(client, b"x" * size)

    assert refused.value.status_code == 413
    assert error_of(refused.value)["param"] == "file"
    assert server.stored_blobs() == before
    assert [f.id for f in client.files.list().data] == listed


def test_a_missing_purpose_is_a_400_naming_it(server: Server) -> None:
    with server.turnout.http(headers={"authorization": f"Bearer {KEYS['a']}"}) as http:
        answer = http.post("/v1/files", files={"file": ("x.txt", b"hello")})

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "purpose"


def test_an_upload_without_a_file_is_a_400_naming_it(server: Server) -> None:
    with server.turnout.http(headers={"authorization": f"Bearer {KEYS['a']}"}) as http:
        answer = http.post("/v1/files", files={"purpose": (None, "assistants")})

    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "file"


def test_an_unknown_purpose_is_a_400_naming_it(server: Server) -> None:
    before = server.stored_blobs()

    with pytest.raises(openai.BadRequestError) as refused:
        upload(server.client("a"), b"hello", purpose="sightseeing")

    assert error_of(refused.value)["param"] == "purpose"
    assert "purpose" in error_of(refused.value)["message"]
    assert server.stored_blobs() == before


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"purpose": "assistants", "file": "hello"}},
        {"content": b"purpose=assistants", "headers": {"content-type": "text/plain"}},
        {
            "content": b"--x\r\nnot a part",
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
    ],
    ids=["json", "plain", "broken-multipart"],
)
def test_a_body_that_is_not_a_multipart_upload_is_a_400(
    server: Server, body: dict[str, Any]
) -> None:
    headers = {"authorization": f"Bearer {KEYS['a']}", **body.pop("headers", {})}
    with server.turnout.http(headers=headers) as http:
        answer = http.post("/v1/files", **body)

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_expires_after_sets_expires_at(server: Server) -> None:
    client = server.client("a")

    created = upload(
        client, b"short-lived", expires_after={"anchor": "created_at", "seconds": 3600}
    )

    assert created.expires_at == created.created_at + 3600
    assert client.files.retrieve(created.id).expires_at == created.expires_at
    assert upload(client, b"kept").expires_at is None


@pytest.mark.parametrize(
    ("expires_after", "param"),
    [
        ({"anchor": "created_at", "seconds": 10}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 31 * 24 * 3600}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "soon"}, "expires_after.seconds"),
        ({"anchor": "last_used", "seconds": 3600}, "expires_after.anchor"),
    ],
)
def test_a_bad_expires_after_is_a_400_naming_it(
    server: Server, expires_after: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        upload(server.client("a"), b"x", expires_after=expires_after)

    assert error_of(refused.value)["param"] == param


# ---- batch input files, checked at upload -----------------------------------------------


def test_a_valid_batch_input_file_is_accepted(server: Server) -> None:
    data = jsonl(chat_line("one"), chat_line("two"), "", chat_line("three"))

    created = upload(server.client("a"), data, "batch")

    assert created.purpose == "batch"
    assert server.client("a").files.content(created.id).read() == data


@pytest.mark.parametrize(
    ("lines", "line", "field"),
    [
        ((chat_line("1"), chat_line("2"), '{"custom_id": "3", "method": '), 3, None),
        (
            (chat_line("1"), {k: v for k, v in chat_line("2").items() if k != "custom_id"}),
            2,
            "custom_id",
        ),
        ((chat_line("1"), chat_line("2"), chat_line("1")), 3, "custom_id"),
        ((chat_line("1"), chat_line("2", url="/v1/embeddings")), 2, "url"),
        ((chat_line("1"), chat_line("2", url="/v1/images/generations")), 2, "url"),
        ((chat_line("1"), chat_line("2", method="GET")), 2, "method"),
        (
            (chat_line("1"), chat_line("2", body={"model": "m", "messages": [], "stream": True})),
            2,
            "body.stream",
        ),
    ],
    ids=["bad-json", "no-custom-id", "duplicate-id", "mixed-urls", "bad-url", "method", "stream"],
)
def test_a_malformed_batch_input_is_a_400_naming_the_line_and_field(
    server: Server, lines: tuple[dict[str, Any] | str, ...], line: int, field: str | None
) -> None:
    client = server.client("a")
    before = server.stored_blobs()

    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, jsonl(*lines), "batch")

    message = error_of(refused.value)["message"]
    assert f"line {line}" in message
    if field is not None:
        assert f"`{field}`" in message
    assert server.stored_blobs() == before
