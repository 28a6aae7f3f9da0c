"""A URL fit for logs and health answers: scheme, host, port and path only; no user,
password, query or fragment (where credentials and tokens ride). One function for every
URL Turnout names in a log: a backend's `load_metrics`, a Redis node's."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
