"""Decisions: which deployments answer a request, in which order, with which budgets."""
