"""Errors a policy decision raises for the client, in OpenAI's terms."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """A request Turnout answers with an error itself, before or instead of a backend."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def model_not_found(model: str) -> ApiError:
    return ApiError(
        f"The model `{model}` does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )
