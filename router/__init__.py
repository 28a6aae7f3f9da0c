"""Turnout's HTTP front end: wire schemas, validation, SSE, error envelopes, CLI."""
