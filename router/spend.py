"""`GET /v1/router/spend`: what requests cost, per team, key, model, deployment and UTC
day, for admins.

Query: `period` = `day` (today, UTC; the default), `week` (since Monday) or `month`
(since the 1st) — the periods dollar budgets count in — or `start` and `end` (ISO dates,
both included, at most `MAX_DAYS` apart) instead; `team` narrows it to one team (absent:
every team, and keys outside teams as team null). Answers the stored spend plus what
this replica has not flushed yet (policies/spend/book.py); other replicas' last second
shows once they flush."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from litestar import Request, Response, get

from policies.errors import ApiError
from policies.spend.rows import FIELDS, NANOS_PER_USD, DayRange, as_json, day_number
from policies.storage.base import StorageUnavailable
from router.auth import require_admin
from router.errors import from_api_error
from router.gateway import Gateway

PERIODS = ("day", "week", "month")
MAX_DAYS = 366


def day_range(query: Mapping[str, str], today: date) -> tuple[str | None, date, date]:
    """The period asked for (None with `start`/`end`) and its first and last days."""
    if "start" in query or "end" in query:
        if "period" in query:
            raise ApiError("Give `period` or `start` and `end`, not both.", param="period")
        first, last = _date(query, "start", today), _date(query, "end", today)
        if last < first:
            raise ApiError("`end` is before `start`.", param="end")
        if (last - first).days >= MAX_DAYS:
            raise ApiError(f"At most {MAX_DAYS} days at once.", param="start")
        return None, first, last
    period = query.get("period", "day")
    if period == "day":
        return period, today, today
    if period == "week":
        return period, today - timedelta(days=today.weekday()), today
    if period == "month":
        return period, today.replace(day=1), today
    raise ApiError(f"`period` must be one of {', '.join(PERIODS)}.", param="period")


def _date(query: Mapping[str, str], name: str, today: date) -> date:
    value = query.get(name)
    if value is None:
        return today
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(f"`{name}` must be a date, YYYY-MM-DD.", param=name) from None


async def spend_report(gateway: Gateway, query: Mapping[str, str]) -> dict[str, Any]:
    today = datetime.fromtimestamp(gateway.clock(), UTC).date()
    period, first, last = day_range(query, today)
    team = query.get("team") or None
    rows = await gateway.spend.read(DayRange(day_number(first), day_number(last), team))
    if team is not None and not rows and team not in gateway.config.teams:
        raise ApiError(f"No team {team!r}.", status=404, param="team", code="team_not_found")
    ordered = sorted(rows.items())
    totals = [sum(t[i] for _, t in ordered) for i in range(len(FIELDS))]
    return {
        "object": "spend",
        "period": period,
        "start": first.isoformat(),
        "end": last.isoformat(),
        "team": team,
        "totals": {
            "usd": totals[0] / NANOS_PER_USD,
            **dict(zip(FIELDS[1:], totals[1:], strict=True)),
        },
        "data": [as_json(key, t) for key, t in ordered],
    }


def unavailable() -> ApiError:
    return ApiError(
        "The spend store is unreachable; try again shortly.",
        status=503,
        type="server_error",
        code="spend_unavailable",
        headers={"retry-after": "1"},
    )


@get("/v1/router/spend", status_code=200)
async def spend_endpoint(request: Request[Any, Any, Any]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    try:
        require_admin(request, gateway)
        answer = await spend_report(gateway, dict(request.query_params))
    except StorageUnavailable:  # a 503 in the envelope, not a 500 (nor the store's address)
        return from_api_error(unavailable())
    except ApiError as exc:
        return from_api_error(exc)
    return Response(orjson.dumps(answer), media_type="application/json")


ROUTES = [spend_endpoint]
