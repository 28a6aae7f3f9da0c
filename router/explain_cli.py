"""`turnout explain --config F request.json`: the explain endpoint's answer, offline.

Builds the gateway from the config without starting any provider (no model loads, no
connection opens), explains, prints JSON. Breakers and limits read as a fresh process
sees them: all closed and full, unless `state` names a shared Redis (`redis_url` or
`redis_cluster_nodes`)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from policies.errors import ApiError
from policies.loading import ConfigError, load_config
from policies.teams import ANONYMOUS, Caller
from router.explain import explain_request
from router.gateway import Gateway


def explain_command(config_path: Path | str, request_path: Path, team: str | None) -> int:
    try:
        config = load_config(config_path)
        query = orjson.loads(request_path.read_bytes())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"{request_path}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(query, dict):
        print(f"{request_path}: expected a JSON object", file=sys.stderr)
        return 1
    if "request" not in query:  # a bare request body
        query = {"request": query}
    if team is not None:
        query["team"] = team
    try:
        answer = asyncio.run(_explain(Gateway.from_config(config), query))
    except ApiError as exc:
        print(f"error ({exc.status}, param {exc.param}): {exc.message}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def _explain(gateway: Gateway, query: dict[str, Any]) -> dict[str, Any]:
    # Whoever reads the config file sees everything in it, as an admin key would.
    caller: Caller = replace(ANONYMOUS, admin=True)
    try:
        return await explain_request(gateway, caller, query)
    finally:
        await gateway.aclose()
