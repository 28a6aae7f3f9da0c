"""A front door's request as its client sent it, carried on the trace beside the chat form
(policies/native.py says which deployments get it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.types import Endpoint


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A door's request on `endpoint` as the client sent it (`body`: sent untranslated,
    but for its `model`, mapped to the deployment's), with the client `headers` that
    endpoint forwards (`Endpoint.client_headers`: `anthropic-beta` for Messages)."""

    endpoint: Endpoint
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, endpoint: Endpoint, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> NativeRequest:
        """The native request of a door's `body`; of the client's `headers`, only those
        `endpoint` forwards are kept (names lower-cased), so no credential travels."""
        wanted = endpoint.client_headers
        kept = {k.lower(): v for k, v in (headers or {}).items() if k.lower() in wanted}
        return cls(endpoint, body, kept)

    @property
    def key(self) -> dict[str, Any]:
        """What a response cache key adds to the chat form's for this request: the body
        and headers as sent (the chat form cannot tell every two native requests apart;
        a native deployment's answer may differ between them). `stream` is no part of it,
        as in the chat form's key."""
        body = {k: v for k, v in self.body.items() if k != "stream"}
        return {"native_request": [body, dict(self.headers)]}
