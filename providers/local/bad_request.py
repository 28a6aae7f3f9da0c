"""`bad_request`: the 400 the local samplers answer for a request they cannot honour."""

from __future__ import annotations

from providers.errors import Failure, UpstreamError


def bad_request(message: str, param: str | None, code: str | None = None) -> UpstreamError:
    """A 400 `invalid_request_error` for the client, naming the parameter at fault."""
    return UpstreamError(
        message,
        failure=Failure.STATUS,
        status=400,
        type="invalid_request_error",
        param=param,
        code=code,
    )
