"""Shared state for the policy layer: breakers, limits, budgets, latency and load statistics,
and the response cache, behind one small interface (`StateStore`), in memory or in Redis."""
