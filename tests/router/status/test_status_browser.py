"""The status page in a real browser: Debian's headless Chromium (/usr/bin/chromium, put
there by scripts/ensure-chromium.sh, which `make test` runs), driven by Playwright for
Python with that executable (no `playwright install`, nothing downloaded), against a real
Turnout in front of two fake upstreams.

The browser meets the login form, logs in with the admin key, sees the primary deployment's
breaker closed; the test then breaks the primary (500s) and sends calls through the SDK
until its breaker opens, and the page shows it open, with the seconds left, by itself:
no reload, no navigation (a marker the test left on `window` is still there). A screenshot
of the page lands in tests/output/status.png (git-ignored) for people to look at."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from router.status.document import section_html
from router.status.page import CSP
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.router.status.snapshots import hostile_snapshot
from tests.turnout_server import RunningTurnout, simple_config

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[3]
SCREENSHOT = REPO / "tests" / "output" / "status.png"
# Offline machines: without these Chromium keeps calling home on closed connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "sk-status-admin-0123456789abcdef"
TEAM_KEY = "sk-status-team-fedcba9876543210"
PRIMARY = "primary/primary-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
FAILURES_TO_OPEN = 3


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Chromium, installed here if the set-up did not (skipped only if that fails too)."""
    if not CHROMIUM.exists():
        script = REPO / "scripts" / "ensure-chromium.sh"
        done = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(
                f"{CHROMIUM} is missing and scripts/ensure-chromium.sh could not install it: "
                f"{done.stderr.strip()[-300:]}"
            )
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium_browser(chromium: Path) -> Iterator[Browser]:
    """One Chromium for the module. Playwright launches it on a fresh temporary profile
    (its own `--user-data-dir`, removed at close), so nothing carries over from any run."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium_browser: Browser) -> Iterator[BrowserContext]:
    """A context of each test's own: no cookie of another test's login."""
    context = chromium_browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        yield context
    finally:
        context.close()


def status_config(primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream) -> dict[str, Any]:
    """Model `m`: the primary, then the fallback; the primary's breaker opens after
    `FAILURES_TO_OPEN` failures in a row and stays open a minute. An admin key and a team
    whose key has limits to show."""
    return simple_config(
        {"primary": primary.base_url, "fallback": fallback.base_url},
        breaker={"failures": FAILURES_TO_OPEN, "cooldown": 60},
        retry={"attempts": 1},
        keys=[{"key": ADMIN_KEY, "name": "ops", "admin": True}],
        teams={
            "research": {
                "keys": [TEAM_KEY],
                "limits": {"rpm": 600, "tpm": 200_000, "concurrency": 8},
                "key_limits": {"rpm": 60, "budget_tokens": {"per": "day", "tokens": 50_000}},
            }
        },
    )


def call(server: RunningTurnout, times: int) -> None:
    with server.client(TEAM_KEY) as client:
        for _ in range(times):
            client.chat.completions.create(model="m", messages=MESSAGES)


def breaker_of(page: Page, label: str) -> Any:
    return page.locator(f'tr[data-deployment="{label}"] .breaker')


def test_the_page_shows_a_breaker_opening_without_a_reload(
    browser: BrowserContext,
    turnout: Callable[..., RunningTurnout],
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
) -> None:
    upstream.set_default(Ok(text="fine"))
    server = turnout(status_config(upstream, upstream_b))
    call(server, 4)  # some latency to show

    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    first = page.goto(f"{server.url}/status")
    assert first is not None
    assert first.status == 401
    assert first.headers["content-security-policy"] == CSP
    key_field = page.locator('form[action="/status/login"] input[name="key"]')
    expect(key_field).to_have_attribute("type", "password")
    expect(key_field).to_have_attribute("autocomplete", "off")

    key_field.fill(TEAM_KEY)  # a key, but not an admin's: the form again, saying so
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not an admin's")
    refusal = refused.value
    assert refusal is not None
    assert refusal.status == 403
    assert refusal.headers["content-security-policy"] == CSP
    key_field.fill(ADMIN_KEY)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    assert page.url == f"{server.url}/status"  # the key went in the body, never a URL
    expect(breaker_of(page, PRIMARY)).to_have_text("closed")
    expect(page.locator('[data-team="research"] li.limit')).not_to_have_count(0)

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.turnoutTestMarker = 'set before the breaker opened'")

    upstream.set_default(Status(500))
    call(server, FAILURES_TO_OPEN)  # each answered by the fallback; the primary's opens

    # The script polls every 2 s; a loaded machine gets some slack, never a reload.
    expect(breaker_of(page, PRIMARY)).to_have_text(
        re.compile(r"^open · \d+ s left$"), timeout=10_000
    )
    expect(breaker_of(page, PRIMARY)).to_have_class(re.compile(r"\bbreaker-open\b"))
    assert page.evaluate("window.turnoutTestMarker") == "set before the breaker opened"
    assert navigations == []

    html = page.content()
    assert ADMIN_KEY not in html
    assert TEAM_KEY not in html
    assert not [url for url in requested if ADMIN_KEY in url or TEAM_KEY in url]

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"status page screenshot: {SCREENSHOT}")

    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    expect(page.locator('input[name="key"]')).to_be_visible()
    assert page.request.get(f"{server.url}/status.json").status == 401


def test_the_page_and_its_json_want_an_admin_key_and_never_show_one(
    turnout: Callable[..., RunningTurnout],
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
) -> None:
    server = turnout(status_config(upstream, upstream_b))
    call(server, 1)
    with server.http() as http:
        assert http.get("/status.json").status_code == 401
        team = {"authorization": f"Bearer {TEAM_KEY}"}
        assert http.get("/status.json", headers=team).status_code == 403
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        page = http.get("/status", headers=admin)

        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text
        assert " style=" not in page.text
        assert ADMIN_KEY not in page.text
        assert TEAM_KEY not in page.text
        assert f'data-deployment="{PRIMARY}"' in page.text  # server-rendered: data at once

        login = http.get("/status")
        assert login.status_code == 401
        assert 'name="key"' in login.text
        assert login.headers["content-security-policy"] == CSP

        script = http.get("/status/static/status.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert http.get("/status/static/..%2Fpage.py").status_code == 404


def test_a_page_turned_off_is_not_found(
    turnout: Callable[..., RunningTurnout], upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, status_page=False))
    with server.http() as http:
        for path in ("/status", "/status.json", "/status/static/status.css"):
            assert http.get(path).status_code == 404, path


@pytest.mark.parametrize("snapshot", [hostile_snapshot(), {"generated_at": 5.0}])
def test_the_script_renders_each_section_as_the_server_does(
    browser: BrowserContext,
    turnout: Callable[..., RunningTurnout],
    upstream: FakeOpenAIUpstream,
    snapshot: dict[str, Any],
) -> None:
    """The server's first paint and the script's refreshes must not differ (nor jump):
    both renderings of one snapshot, parsed by the browser, give the same DOM, and neither
    runs the markup hidden in a name."""
    server = turnout(simple_config({"up": upstream.base_url}))  # open access: no login
    page = browser.new_page()
    page.goto(f"{server.url}/status")
    page.wait_for_function("window.turnoutStatus !== undefined")
    server_html = section_html(snapshot)
    same = page.evaluate(
        """([snap, fromServer]) => {
            const fromScript = window.turnoutStatus.sections(snap);
            const parse = (html) => {
                const t = document.createElement("template");
                t.innerHTML = html;
                return t.innerHTML;
            };
            return Object.keys(fromServer).map(
                (name) => [name, parse(fromServer[name]), parse(fromScript[name])]);
        }""",
        [snapshot, server_html],
    )
    assert [name for name, _, _ in same] == list(server_html)
    for name, by_server, by_script in same:
        assert by_server == by_script, name
    assert page.evaluate("window.pwned") is None
