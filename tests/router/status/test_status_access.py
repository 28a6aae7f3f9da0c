"""Who may read `/status.json`: an admin key as a bearer, or the session cookie that
`POST /status/login` sets for one; other keys 403, no key 401 (OpenAI's envelope), a
tampered, expired or demoted session 401; `status_page: false` 404; open access open.
And no key in any URL, answer or log line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from litestar import Request

from policies.config import TurnoutConfig
from policies.redaction import configured_secrets
from router.gateway import Gateway
from router.status.access import cookie_header, host_secret
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.manual_clock import ManualClock
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ADMIN, OTHER_ADMIN, MEMBER = "sk-admin-access-0001", "sk-admin-access-0002", "sk-member-access-03"
KEYS = (ADMIN, OTHER_ADMIN, MEMBER)
SECRET = "status-cookie-secret-for-tests-0123456789"
Logs = list[dict[str, Any]]


def config(upstream: FakeOpenAIUpstream, **extra: Any) -> dict[str, Any]:
    return simple_config(
        {"a": upstream.base_url},
        keys=[
            {"key": ADMIN, "admin": True, "name": "ops"},
            {"key": OTHER_ADMIN, "admin": True},
            {"key": MEMBER},
        ],
        **extra,
    )


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def get(server: RunningTurnout, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/status.json", **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def login(server: RunningTurnout, key: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/status/login", data={"key": key}, headers=headers)


def cookie_of(response: httpx.Response) -> str:
    cookie = SimpleCookie(response.headers["set-cookie"])
    return cookie["turnout_status"].value


def with_cookie(token: str) -> dict[str, str]:
    return {"cookie": f"turnout_status={token}"}


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for key in KEYS:
            assert key not in text


def test_bearer_admin_reads_other_keys_403_no_key_401(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream))
    assert get(server, headers=bearer(ADMIN)).status_code == 200
    member = get(server, headers=bearer(MEMBER))
    assert member.status_code == 403
    assert member.json()["error"]["code"] == "admin_required"
    missing = get(server)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"  # OpenAI's envelope
    wrong = get(server, headers=bearer("sk-not-a-key-at-all"))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert_no_key(member.text, missing.text, wrong.text)


def test_login_sets_a_strict_http_only_cookie_that_reads_the_json(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: Logs
) -> None:
    server = turnout(config(upstream))
    answer = login(server, ADMIN)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/status"
    header = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in header
    assert "Path=/;" in header  # /status.json is outside a /status path (RFC 6265)
    assert "Secure" not in header  # plain http on loopback
    assert "Max-Age=28800" in header  # the default 8 h
    token = cookie_of(answer)
    assert_no_key(token, header)

    body = get(server, headers=with_cookie(token))
    assert body.status_code == 200
    assert body.json()["object"] == "turnout.status"
    logins = [entry for entry in logs if entry["event"] == "status_login"]
    assert [entry["key_id"] for entry in logins] == [body.json()["keys"][0]["key_id"]]
    assert_no_key(repr(logs))


def test_wrong_key_401_non_admin_403_at_login_for_scripts_and_browsers(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: Logs
) -> None:
    server = turnout(config(upstream))
    wrong = login(server, "sk-guessed-key-xyz")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "set-cookie" not in wrong.headers
    member = login(server, MEMBER)
    assert member.status_code == 403
    assert "set-cookie" not in member.headers
    page = login(server, MEMBER, accept="text/html")
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/status/login"' in page.text  # the form again
    wrong_page = login(server, "sk-guessed-key-xyz", accept="text/html")
    assert wrong_page.status_code == 401
    assert "sk-guessed-key-xyz" not in wrong_page.text + wrong.text
    assert_no_key(member.text, page.text, repr(logs))
    assert "sk-guessed-key-xyz" not in repr(logs)


def test_tampered_or_foreign_cookie_refused(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    server = turnout(config(upstream, storage={"path": str(tmp_path / "here")}))
    token = cookie_of(login(server, ADMIN))
    payload, _, signature = token.rpartition(".")
    # The first character: the last one of base64 carries bits a decoder may ignore.
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    for bad in (f"{payload}.{flipped}", "garbage", f"x{token}"):
        refused = get(server, headers=with_cookie(bad))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_session"
    # Another host's Turnout (its own data directory, so its own secret): nothing there.
    other = turnout(config(upstream, storage={"path": str(tmp_path / "elsewhere")}))
    assert get(other, headers=with_cookie(token)).status_code == 401


def test_one_hosts_workers_share_sessions_without_a_configured_secret(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    """Without `session_secret`, the secret is kept in the data directory: every worker of
    a host (and a restart) reads the same one, so the page's refresh, answered by any
    worker, keeps its session. The file is its owner's alone."""
    data = {"path": str(tmp_path / "data")}
    one = turnout(config(upstream, storage=data))
    other = turnout(config(upstream, storage=data))
    token = cookie_of(login(one, ADMIN))
    assert get(other, headers=with_cookie(token)).status_code == 200
    key_file = tmp_path / "data" / "status-session.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_text().strip()) >= 32
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == []


def test_an_unwritable_data_directory_falls_back_to_a_secret_of_the_process(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    first, second = host_secret(blocked / "data"), host_secret(blocked / "data")
    assert len(first) >= 32
    assert first != second  # nothing kept: each process its own


def test_a_configured_secret_lets_replicas_share_sessions(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    shared = {"session_secret": SECRET}
    one = turnout(config(upstream, status_page=shared))
    other = turnout(config(upstream, status_page=shared))
    token = cookie_of(login(one, ADMIN))
    assert get(other, headers=with_cookie(token)).status_code == 200


def test_session_expires_after_its_ttl(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    clock = ManualClock()
    server = turnout(config(upstream, status_page={"session_ttl_s": 60}), clock)
    answer = login(server, ADMIN)
    assert "Max-Age=60" in answer.headers["set-cookie"]
    token = cookie_of(answer)
    clock.advance(59)
    assert get(server, headers=with_cookie(token)).status_code == 200
    clock.advance(2)
    assert get(server, headers=with_cookie(token)).status_code == 401


def test_logout_clears_the_cookie(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(config(upstream))
    token = cookie_of(login(server, ADMIN))
    out = httpx.post(f"{server.url}/status/logout", headers=with_cookie(token))
    assert out.status_code == 303
    assert out.headers["location"] == "/status"
    cleared = out.headers["set-cookie"]
    assert cleared.startswith("turnout_status=;")
    assert "Max-Age=0" in cleared
    assert "HttpOnly" in cleared


def test_a_cross_site_form_post_is_refused(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream))
    forged = login(server, ADMIN, origin="https://evil.example")
    assert forged.status_code == 403
    assert "set-cookie" not in forged.headers
    same = login(server, ADMIN, origin=server.url)
    assert same.status_code == 303


def test_a_key_demoted_by_a_reload_loses_its_session(
    tmp_path: Path, upstream: FakeOpenAIUpstream
) -> None:
    path = tmp_path / "turnout.yaml"
    first = config(
        upstream, storage={"path": str(tmp_path / "data")}, status_page={"session_secret": SECRET}
    )
    write(path, first)
    server = ReloadingTurnout(path).start()
    try:
        token = cookie_of(login(server, OTHER_ADMIN))
        assert get(server, headers=with_cookie(token)).status_code == 200
        demoted = {
            **first,
            "keys": [k if k["key"] != OTHER_ADMIN else {"key": OTHER_ADMIN} for k in first["keys"]],
        }
        write(path, demoted)
        assert server.reload("test")
        assert get(server, headers=with_cookie(token)).status_code == 401
        assert get(server, headers=bearer(ADMIN)).status_code == 200
    finally:
        server.stop()


def test_status_page_false_is_404(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(config(upstream, status_page=False))
    assert get(server, headers=bearer(ADMIN)).status_code == 404
    assert login(server, ADMIN).status_code == 404
    assert httpx.post(f"{server.url}/status/logout").status_code == 404


def test_open_access_is_open(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(simple_config({"a": upstream.base_url}))
    body = get(server)
    assert body.status_code == 200
    assert body.json()["open_access"] is True
    assert login(server, "anything").status_code == 303  # nothing to log in to


def test_login_takes_a_form_only(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(config(upstream))
    as_json = httpx.post(f"{server.url}/status/login", json={"key": ADMIN})
    assert as_json.status_code == 415
    huge = httpx.post(f"{server.url}/status/login", data={"key": "k" * 10_000})
    assert huge.status_code == 413


def test_session_secret_is_a_secret_for_the_log() -> None:
    settings = TurnoutConfig.model_validate({"status_page": {"session_secret": SECRET}})
    assert SECRET in configured_secrets(settings)
    assert TurnoutConfig.model_validate({"status_page": True}).status_page.enabled
    assert not TurnoutConfig.model_validate({"status_page": False}).status_page.enabled


@pytest.mark.parametrize(
    ("scheme", "forced", "secure"),
    [("https", False, True), ("http", False, False), ("http", True, True)],
)
def test_secure_over_https_or_when_configured(
    upstream: FakeOpenAIUpstream, scheme: str, forced: bool, secure: bool
) -> None:
    settings = TurnoutConfig.model_validate(config(upstream, status_page={"secure_cookie": forced}))
    gateway = Gateway.from_config(settings)
    scope: Any = {
        "type": "http",
        "scheme": scheme,
        "server": ("turnout.example", 443),
        "path": "/status/login",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"turnout.example")],
        "method": "POST",
    }
    header = cookie_header(Request(scope=scope), gateway, "token", 60)
    assert header.endswith("; Secure") is secure
    assert header.startswith("turnout_status=token; HttpOnly; SameSite=Strict; Path=/")
