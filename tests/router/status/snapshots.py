"""Snapshots, shaped as `/status.json` serves them, for the page's rendering tests."""

from __future__ import annotations

from typing import Any

EVIL = '<img src=x onerror="window.pwned=1">&"\''


def hostile_snapshot() -> dict[str, Any]:
    """Every state and shape a section can show, with names that would be markup if a
    renderer forgot to escape them."""
    evil = EVIL
    limit = {"kind": "rpm", "capacity": 60, "used": 45, "remaining": 15, "resets_at": 1030.0}
    return {
        "generated_at": 1000.0,
        "models": [
            {
                "name": f"m{evil}",
                "strategy": "priority",
                "limits": [{"kind": "budget_usd", "capacity": 25.5, "used": 3.25, "per": "month"}],
                "deployments": [
                    {
                        "label": f"p/{evil}",
                        "provider": evil,
                        "kind": "openai",
                        "breaker": {"state": "open", "open_for_s": 12.4},
                        "success_rate": 0.875,
                        "latency_ms": {"p50": 8.25, "p95": 120.0},
                        "ttft_ms": {"p50": None, "p95": None},
                        "in_flight": 2,
                        "queue": {"depth": 3, "slots_in_use": 1, "slots": 4},
                        "history": [
                            {"t": 930.0, "p50_ms": 10.0, "failures": 0},
                            {"t": 940.0, "p50_ms": 12.25, "failures": 2},
                            {"t": 970.0, "p50_ms": None},
                            {"t": 1000.0, "p50_ms": 30.0},
                        ],
                    },
                    {"label": "q/half", "breaker": {"state": "half_open"}, "history": []},
                    {"label": "r/unknown", "breaker": {"state": None}, "in_flight": None},
                    {"label": "s/load", "breaker": {"state": "closed"}, "queue": {"load": 5}},
                ],
            }
        ],
        "teams": [
            {
                "name": evil,
                "limits": [limit, {"kind": "concurrency", "capacity": 8, "used": None}],
                "keys": [{"name": evil, "limits": []}],
            }
        ],
        "keys": [{"name": "ops", "limits": [{"kind": "tpm", "capacity": 1e6, "used": 0}]}],
        "reloads": [{"at": 990.0, "outcome": "rejected", "trigger": "sighup", "reason": evil}],
        "state_store": {"kind": "redis", "where": evil, "healthy": False, "error": evil},
        "batches": [
            {
                "id": evil,
                "owner": "ops",
                "status": "in_progress",
                "total": 10,
                "completed": 4,
                "failed": 1,
            }
        ],
    }
