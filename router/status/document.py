"""The status page's two documents: the page itself, with every section rendered from a
snapshot (router/status/sections.py), and the login form shown to a browser without a
valid session. Neither carries an inline script or style: the page's Content-Security-Policy
(router/status/page.py) allows only Turnout's own static files, so an injected tag could
run nothing even if escaping ever failed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.status import sections
from router.status.sections import e

STATIC = "/status/static"
REFRESH_MS = 2000  # how often the script fetches /status.json


def section_html(snapshot: Mapping[str, Any]) -> dict[str, str]:
    """Each section's content by name: what static/status.js's `sections(snapshot)` renders
    from the same JSON on each refresh."""
    now = float(snapshot.get("generated_at") or 0)
    return {
        "models": sections.models_section(snapshot.get("models") or [], now),
        "teams": sections.teams_section(
            snapshot.get("teams") or [], snapshot.get("keys") or [], now
        ),
        "batches": sections.batches_section(snapshot.get("batches") or []),
        "reloads": sections.reloads_section(snapshot.get("reloads") or []),
        "store": sections.store_section(snapshot.get("state_store")),
    }


def _head(title: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{e(title)}</title>'
        f'<link rel="stylesheet" href="{STATIC}/status.css"></head>'
    )


def status_document(snapshot: Mapping[str, Any], *, can_log_out: bool) -> str:
    """The whole page. `can_log_out`: the browser came with a session cookie, so a log-out
    button means something (a bearer key or open access has nothing to forget)."""
    now = float(snapshot.get("generated_at") or 0)
    logout = (
        '<form method="post" action="/status/logout" class="logout">'
        '<button type="submit">Log out</button></form>'
        if can_log_out
        else ""
    )
    titles = {
        "models": "Models and deployments",
        "teams": "Teams and keys",
        "batches": "Batches in progress",
        "reloads": "Config reloads",
        "store": "State store",
    }
    blocks = [(name, titles[name], content) for name, content in section_html(snapshot).items()]
    body = "".join(
        f'<section id="{name}"><h2>{title}</h2><div class="content" data-section="{name}">'
        f"{content}</div></section>"
        for name, title, content in blocks
    )
    return (
        f"{_head('Turnout status')}"
        f'<body data-refresh-ms="{REFRESH_MS}"><header><h1>Turnout</h1>'
        f'<span class="updated">updated <time id="generated">{e(sections.clock(now))}</time>'
        ' UTC</span><span id="refresh-state" class="refresh-state" role="status"></span>'
        f"{logout}</header><main>{body}</main>"
        f'<script src="{STATIC}/status.js" defer></script></body></html>'
    )


def login_document(message: str | None = None) -> str:
    """The login form: the admin key goes in a POST body, never a URL (no GET form, no
    query string), and the browser is asked not to remember it."""
    note = f'<p class="notice" role="alert">{e(message)}</p>' if message else ""
    return (
        f"{_head('Turnout status: log in')}"
        '<body class="login"><main><form method="post" action="/status/login" '
        'class="login-form" autocomplete="off"><h1>Turnout status</h1>'
        f"{note}"
        '<label for="key">Admin key</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required autofocus '
        'spellcheck="false">'
        '<button type="submit">Log in</button></form></main></body></html>'
    )
