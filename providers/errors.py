"""Turnout's own error type for failed backend calls.

Every adapter maps its backend's failures (HTTP statuses, transport errors, broken
streams) into `UpstreamError` at its seam, so retry and failover decisions never look
at a foreign library's exceptions.
"""

from __future__ import annotations

from enum import StrEnum

# How much of an error body the log keeps (`UpstreamError.detail`).
MAX_DETAIL_BYTES = 8192


def upstream_said(content: bytes) -> str:
    """An error body as the log keeps it: whole, up to `MAX_DETAIL_BYTES` (the message an
    adapter takes from it may be a cut, and a client only ever sees that, masked)."""
    return content[:MAX_DETAIL_BYTES].decode("utf-8", errors="replace")


class Failure(StrEnum):
    """What went wrong, as far as retry and failover decisions care."""

    STATUS = "status"  # the backend answered with an error status or an error payload
    CONNECT = "connect"  # no connection, or it was refused or reset before a response
    TIMEOUT = "timeout"  # connect, first byte or stream-idle timeout
    PROTOCOL = "protocol"  # the backend's answer was not what its wire format promises
    STREAM_BROKEN = "stream_broken"  # a stream failed after it had started
    # Turnout's own side could not make the call: the provider is closed or its start
    # failed, or a limit of this process (file descriptors, local ports) is reached. Never
    # the backend's failure: no breaker counts it, no retry of the same deployment burns
    # an attempt on it; the next deployment is tried. (A loading model, a full connection
    # pool or a busy local engine are waited for, within the request's deadline: they
    # raise nothing.)
    OWN_LIMIT = "own_limit"


class UpstreamError(Exception):
    """A backend call failed. Carries OpenAI's error fields for the client."""

    def __init__(
        self,
        message: str,
        *,
        failure: Failure,
        status: int,
        type: str,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        """`detail`: what the upstream said, for the log only, when `message` is the
        masked text a client may see (see policies.redaction); None: `message` is all."""
        super().__init__(message)
        self.message = message
        self.failure = failure
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.detail = detail

    def summary(self) -> str:
        """A short phrase for attempt logs and the final error message."""
        detail = self.code or self.type
        if self.failure is Failure.STATUS:
            return f"{self.status} {detail}"
        return f"{self.failure.value}: {self.message}"

    @classmethod
    def connect(cls, message: str) -> UpstreamError:
        return cls(message, failure=Failure.CONNECT, status=502, type="upstream_connect_error")

    @classmethod
    def timeout(cls, message: str) -> UpstreamError:
        return cls(message, failure=Failure.TIMEOUT, status=504, type="upstream_timeout")

    @classmethod
    def protocol(cls, message: str) -> UpstreamError:
        return cls(message, failure=Failure.PROTOCOL, status=502, type="upstream_protocol_error")

    @classmethod
    def unavailable(cls, message: str) -> UpstreamError:
        """A health check of a provider that is not up (not started, not loaded, stopped):
        counted like a failed call, so an idle provider's breaker opens too."""
        return cls(message, failure=Failure.CONNECT, status=503, type="service_unavailable")

    @classmethod
    def own_limit(cls, message: str) -> UpstreamError:
        return cls(message, failure=Failure.OWN_LIMIT, status=503, type="service_unavailable")

    @classmethod
    def stream_broken(cls, message: str) -> UpstreamError:
        return cls(message, failure=Failure.STREAM_BROKEN, status=502, type="upstream_stream_error")
