"""The status page's documents as the server renders them, without a browser: everything
escaped, each state worded, the login form's key kept out of URLs and the browser's memory,
and numbers written as the page's script writes them (test_status_browser.py compares the
two renderings in Chromium)."""

from __future__ import annotations

import re

from router.status.document import login_document, section_html, status_document
from router.status.numbers import attr_number, fixed
from tests.router.status.snapshots import EVIL, hostile_snapshot


def test_every_name_is_escaped_and_no_script_or_style_is_inline() -> None:
    page = status_document(hostile_snapshot(), can_log_out=True)
    assert EVIL not in page
    assert "<img" not in page
    assert "&lt;img src=x onerror=&quot;window.pwned=1&quot;&gt;&amp;&quot;&#x27;" in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/status/static/status.js" defer>']
    assert " style=" not in page
    assert "<style" not in page


def test_each_breaker_state_has_its_words_and_class() -> None:
    models = section_html(hostile_snapshot())["models"]
    assert '<span class="breaker breaker-open">open · 12 s left</span>' in models
    assert '<span class="breaker breaker-half_open">half-open</span>' in models
    assert '<span class="breaker breaker-unknown">unknown</span>' in models
    assert '<span class="breaker breaker-closed">closed</span>' in models
    assert "3 queued · 1/4 slots" in models
    assert "load 5" in models
    assert "87.5\u2009%" in models
    assert "8.3 / 120 ms" in models  # 8.25 rounds up, as the script's toFixed does


def test_limits_are_bars_with_their_figures() -> None:
    teams = section_html(hostile_snapshot())["teams"]
    assert '<meter min="0" max="60" low="42" high="54" optimum="0" value="45"></meter>' in teams
    assert "45 of 60 · resets in 30 s" in teams
    assert "unknown of 8" in teams  # the store did not answer
    assert "keys outside teams" in teams
    assert "0 of 1,000,000" in teams
    models = section_html(hostile_snapshot())["models"]
    assert "dollar budget / month" in models
    assert "$3.25 of $25.50" in models


def test_the_log_out_button_only_with_a_session() -> None:
    assert 'action="/status/logout"' in status_document({}, can_log_out=True)
    assert 'action="/status/logout"' not in status_document({}, can_log_out=False)


def test_the_login_form_posts_a_password_field_that_is_not_remembered() -> None:
    form = login_document(EVIL)
    assert '<form method="post" action="/status/login"' in form
    assert '<input id="key" name="key" type="password" autocomplete="off"' in form
    assert EVIL not in form
    assert "&lt;img" in form


def test_numbers_round_halves_up_and_never_use_an_exponent() -> None:
    assert fixed(8.25, 1) == "8.3"
    assert fixed(2.5, 0) == "3"
    assert fixed(0.125, 2) == "0.13"
    assert attr_number(1e6) == "1000000"
    assert attr_number(17.849999999999998) == "17.85"
    assert attr_number(42.0) == "42"
