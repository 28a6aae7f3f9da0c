"""The status page's sections as HTML, from the snapshot `/status.json` serves
(router/status/data.py), so the first paint has the data without a script.

router/status/static/status.js renders the same sections from the same JSON on each refresh:
the markup here and there must stay alike (same elements, classes and wording), which the
browser test (tests/router/status/test_status_browser.py) watches. Every value is escaped:
names come from the config, the rest are numbers and states, but a page of an admin's must
not trust even those."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from router.status.chart import latency_svg
from router.status.numbers import attr_number, fixed

Json = Mapping[str, Any]

LIMIT_LABELS = {
    "rpm": "requests / min",
    "tpm": "tokens / min",
    "budget_tokens": "token budget",
    "budget_usd": "dollar budget",
    "concurrency": "concurrent calls",
}
DASH = "\u2014"


def e(value: object) -> str:
    return escape(str(value), quote=True)


def models_section(models: Sequence[Json], now: float) -> str:
    if not models:
        return '<p class="empty">No models configured.</p>'
    return "".join(_model(model, now) for model in models)


def _model(model: Json, now: float) -> str:
    rows = "".join(_deployment(d) for d in model.get("deployments") or [])
    return (
        f'<article class="model" data-model="{e(model["name"])}">'
        f'<h3>{e(model["name"])} <span class="strategy">{e(model.get("strategy") or "")}'
        "</span></h3>"
        f"{limits(model['limits'], now) if model.get('limits') else ''}"
        '<table class="deployments"><thead><tr><th>Deployment</th><th>Provider</th>'
        "<th>Kind</th><th>Breaker</th><th>Success</th><th>Latency p50 / p95</th>"
        "<th>TTFT p50 / p95</th><th>In flight</th><th>Queue</th><th>p50, last minutes</th>"
        f"</tr></thead><tbody>{rows}</tbody></table></article>"
    )


def _deployment(d: Json) -> str:
    return (
        f'<tr data-deployment="{e(d["label"])}"><td class="label">{e(d["label"])}</td>'
        f"<td>{e(d.get('provider') or DASH)}</td><td>{e(d.get('kind') or DASH)}</td>"
        f"<td>{breaker_badge(d.get('breaker') or {})}</td>"
        f'<td class="num">{percent(d.get("success_rate"))}</td>'
        f'<td class="num">{pair_ms(d.get("latency_ms"))}</td>'
        f'<td class="num">{pair_ms(d.get("ttft_ms"))}</td>'
        f'<td class="num">{count(d.get("in_flight"))}</td>'
        f'<td class="num">{queue(d.get("queue"))}</td>'
        f"<td>{latency_svg(d.get('history') or [])}</td></tr>"
    )


def breaker_badge(breaker: Json) -> str:
    state = str(breaker.get("state") or "unknown").replace("-", "_")
    text = state.replace("_", "-")
    if state == "open" and breaker.get("open_for_s") is not None:
        text = f"open \u00b7 {max(0, round(float(breaker['open_for_s'])))} s left"
    return f'<span class="breaker breaker-{e(state)}">{e(text)}</span>'


def percent(rate: object) -> str:
    if not isinstance(rate, int | float):
        return DASH
    return f"{fixed(rate * 100, 1)}\u2009%"


def ms(value: object) -> str:
    if not isinstance(value, int | float):
        return DASH
    return fixed(value, 1) if value < 10 else fixed(value, 0)


def pair_ms(pair: object) -> str:
    if not isinstance(pair, Mapping):
        return DASH
    p50, p95 = pair.get("p50"), pair.get("p95")
    if p50 is None and p95 is None:
        return DASH
    return f"{ms(p50)} / {ms(p95)} ms"


def count(value: object) -> str:
    return e(value) if isinstance(value, int | float) else DASH


def queue(q: object) -> str:
    """A local sampler's jobs waiting and slots in use; a sampler host tells only a load."""
    if not isinstance(q, Mapping):
        return DASH
    if q.get("slots") is None:
        return f"load {count(q['load'])}" if q.get("load") is not None else DASH
    return (
        f"{count(q.get('depth'))} queued \u00b7 "
        f"{count(q.get('slots_in_use'))}/{count(q.get('slots'))} slots"
    )


def teams_section(teams: Sequence[Json], keys: Sequence[Json], now: float) -> str:
    """Each team with its limits and its keys' (by configured name or id, never the key),
    then the keys outside any team."""
    if not teams and not keys:
        return '<p class="empty">No teams or keys configured.</p>'
    outside = [{"name": "keys outside teams", "limits": None, "keys": keys}] if keys else []
    return "".join(_team(team, now) for team in [*teams, *outside])


def _team(team: Json, now: float) -> str:
    keys = "".join(
        f'<li class="key"><h4>{e(key.get("name") or "unnamed key")}</h4>'
        f"{limits(key.get('limits') or [], now)}</li>"
        for key in team.get("keys") or []
    )
    return (
        f'<article class="team" data-team="{e(team["name"])}"><h3>{e(team["name"])}</h3>'
        f"{limits(team['limits'], now) if team.get('limits') is not None else ''}"
        f"{f'<ul class=keys>{keys}</ul>' if keys else ''}</article>"
    )


def limits(items: Sequence[Json], now: float) -> str:
    if not items:
        return '<p class="empty">no limits</p>'
    return f'<ul class="limits">{"".join(_limit(item, now) for item in items)}</ul>'


def _limit(limit: Json, now: float) -> str:
    kind = str(limit.get("kind") or "")
    label = LIMIT_LABELS.get(kind, kind)
    if limit.get("per"):
        label = f"{label} / {limit['per']}"
    capacity = float(limit.get("capacity") or 0)
    used = limit.get("used")
    if not isinstance(used, int | float):  # the store did not answer
        bar, figures = "<meter></meter>", f"unknown of {e(amount(kind, capacity))}"
    else:
        bar = (
            f'<meter min="0" max="{attr_number(capacity)}" low="{attr_number(capacity * 0.7)}" '
            f'high="{attr_number(capacity * 0.9)}" optimum="0" '
            f'value="{attr_number(min(float(used), capacity))}"></meter>'
        )
        figures = f"{e(amount(kind, float(used)))} of {e(amount(kind, capacity))}"
    resets = limit.get("resets_at")
    if isinstance(resets, int | float) and isinstance(used, int | float) and used > 0:
        figures += f" \u00b7 resets in {_duration(float(resets) - now)}"
    return (
        f'<li class="limit" data-kind="{e(kind)}"><span class="what">{e(label)}</span>'
        f'{bar}<span class="figures">{figures}</span></li>'
    )


def amount(kind: str, value: float) -> str:
    if kind == "budget_usd":
        return f"${float(fixed(value, 2)):,.2f}"
    return f"{math.floor(value + 0.5):,}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def reloads_section(reloads: Sequence[Json]) -> str:
    if not reloads:
        return '<p class="empty">No reloads since the start.</p>'
    rows = "".join(
        f'<tr><td>{e(clock(r.get("at")))}</td><td><span class="outcome outcome-'
        f'{e(r.get("outcome") or "")}">{e(r.get("outcome") or DASH)}</span></td>'
        f"<td>{e(r.get('trigger') or '')}</td><td>{e(r.get('reason') or '')}</td></tr>"
        for r in reloads
    )
    return (
        '<table class="reloads"><thead><tr><th>At (UTC)</th><th>Outcome</th><th>Trigger</th>'
        f"<th>Reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def store_section(store: Json | None) -> str:
    if not store:
        return f'<p class="empty">{DASH}</p>'
    healthy = bool(store.get("healthy"))
    error = store.get("error")
    shown_where = store.get("where") and store.get("where") != store.get("kind")
    where = f'<span class="where">{e(store["where"])}</span> ' if shown_where else ""
    return (
        f'<p class="store"><span class="kind">{e(store.get("kind") or DASH)}</span> '
        f"{where}"
        f'<span class="health health-{"ok" if healthy else "bad"}">'
        f"{'healthy' if healthy else 'unhealthy'}</span>"
        f"{f' <span class=error>{e(error)}</span>' if error else ''}</p>"
    )


def batches_section(batches: Sequence[Json]) -> str:
    if not batches:
        return '<p class="empty">No batches in progress.</p>'
    rows = "".join(_batch(b) for b in batches)
    return (
        '<table class="batches"><thead><tr><th>Batch</th><th>Owner</th><th>Status</th>'
        f"<th>Progress</th><th>Done / failed / total</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _batch(batch: Json) -> str:
    total = int(batch.get("total") or 0)
    done = int(batch.get("completed") or 0) + int(batch.get("failed") or 0)
    return (
        f'<tr data-batch="{e(batch["id"])}"><td class="label">{e(batch["id"])}</td>'
        f"<td>{e(batch.get('owner') or DASH)}</td><td>{e(batch.get('status') or DASH)}</td>"
        f'<td><progress max="{max(total, 1)}" value="{min(done, max(total, 1))}"></progress></td>'
        f'<td class="num">{e(batch.get("completed") or 0)} / {e(batch.get("failed") or 0)}'
        f" / {total}</td></tr>"
    )


def clock(at: object) -> str:
    """Epoch seconds as HH:MM:SS UTC (the script writes the same)."""
    if not isinstance(at, int | float):
        return DASH
    return time.strftime("%H:%M:%S", time.gmtime(at))
