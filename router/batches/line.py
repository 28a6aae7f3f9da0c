"""One batch line, run as a live request would be: the batch door of the one pipeline
(router/pipeline.py), as the batch creator's key, with its team's rules, limits and
budgets, the plan, translation, retries, breakers and fallbacks.

Two things differ from a live request, so that batches yield to interactive traffic: a
line may use only `batches.limit_share` of each limit (held back, not failed, while live
requests leave it less: it waits the `Retry-After` and tries again), and on a local
sampler it waits behind live requests (`background`).

The output line is OpenAI's: `{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}`; a line whose answer is not a 2xx goes to the error file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from policies.errors import ApiError
from policies.storage.base import BatchRecord, LineResult, StorageUnavailable
from policies.storage.factory import Storage
from providers.errors import UpstreamError
from providers.types import Endpoint
from router.batches.input_file import BATCH_ENDPOINTS, RESPONSES_URL
from router.body import validate
from router.errors import envelope
from router.gateway import Gateway, PolicyObserver
from router.pipeline import Failure, PipelineRun
from router.responses.schema import ResponsesRequest
from router.responses.turn import prepare_turn
from router.schemas.endpoint_schemas import SCHEMAS
from router.stored import owner_of, unavailable

RETRY_CAP_S = 60.0  # a line held back by a limit looks again at least this often


@dataclass(frozen=True, slots=True)
class LineRun:
    """What every line of one batch runs with."""

    batch: BatchRecord
    gateway: Callable[[], Gateway]  # the gateway serving now (a reload replaces it)
    observer: PolicyObserver
    clock: Callable[[], float]
    storage: Storage  # a `/v1/responses` line's conversation and stored turn

    async def run(self, line: int, raw: bytes) -> LineResult:
        item = orjson.loads(raw)  # checked when the batch was validated
        custom_id: str = item["custom_id"]
        request_id_base = line_id(self.batch.id, line)
        while True:
            gateway = self.gateway()
            caller = gateway.keys.by_key_id(self.batch.key_id)
            # A key moved to another team since is gone for this batch too: its lines
            # would spend the new team's budgets for answers only the old team reads.
            if caller is None or owner_of(caller) != self.batch.owner:
                failure = _gone_key()
                return _result(line, custom_id, request_id_base, failure, "")
            outcome = await self._attempt(gateway, caller, item)
            if isinstance(outcome, float):  # held back by a limit: wait, then again
                if self.clock() + outcome >= self.batch.expires_at:
                    return expired_line(line, custom_id, self.batch.id)
                await asyncio.sleep(min(outcome, RETRY_CAP_S))
                continue
            status, body, request_id = outcome
            if isinstance(body, Failure):
                return _result(line, custom_id, request_id_base, body, request_id)
            return LineResult(
                line, custom_id, True, _output(request_id_base, custom_id, status, request_id, body)
            )

    async def _attempt(
        self, gateway: Gateway, caller: Any, item: dict[str, Any]
    ) -> float | tuple[int, bytes | Failure, str]:
        """One try through the pipeline: the answer, the failure, or how long to wait
        before trying again (a limit that this line's share has no room in now)."""
        url: str = item["url"]
        responses = url == RESPONSES_URL  # run as a chat, as the Responses door runs it
        endpoint = Endpoint.CHAT if responses else BATCH_ENDPOINTS[url]
        config = gateway.config.batches
        run = PipelineRun.begin(
            gateway,
            self.observer,
            endpoint,
            None,
            label="responses" if responses else None,
            share=config.limit_share,
            background=True,
            extra_log={"batch": self.batch.id, "custom_id": item["custom_id"]},
        )
        request_id = run.record.request_id
        try:
            await run.admit(caller)
            if responses:
                return 200, await self._response(run, caller, item["body"]), request_id
            forward = await run.prepare(SCHEMAS[endpoint], item["body"], {})
            content, _ = await run.answer(forward, item["body"].get("cache"))
            return 200, content, request_id
        except (ApiError, UpstreamError) as exc:
            wait = held_back(exc)
            failure = await run.fail(exc)
            if wait is not None:
                return wait
            return failure.status, failure, request_id
        except asyncio.CancelledError:  # the batch was cancelled, or the runner stopped
            await run.fail(ApiError("The batch line was cancelled.", status=499))
            raise
        except Exception as exc:
            run.crashed(exc)
            raise
        finally:
            await run.end()

    async def _response(self, run: PipelineRun, caller: Any, body: dict[str, Any]) -> bytes:
        """A `/v1/responses` line: through the Responses turn (router/responses/turn.py),
        its conversation read and its turn stored as the door does. A store that is down
        is the door's 503 (with `Retry-After`): the line is held back and run again, not
        failed as a crash."""
        validate(ResponsesRequest, body)
        try:
            turn, forward = await prepare_turn(run, self.storage, caller, body, {})
            content, _ = await run.answer(forward, turn.cache_options())
            return orjson.dumps(await turn.whole(orjson.loads(content)))
        except StorageUnavailable:
            raise unavailable() from None


def held_back(exc: ApiError | UpstreamError) -> float | None:
    """Seconds to wait when Turnout's own limits refused the line for now (a limit with a
    `Retry-After`, or a shared store that cannot check them); None for a real answer (a
    request too large for any limit has no `Retry-After`: it is an answer, an error)."""
    if not isinstance(exc, ApiError):
        return None
    retry = exc.headers.get("retry-after")
    if exc.status in (429, 503) and retry is not None and retry.isdigit():
        return float(retry)
    return None


def line_id(batch_id: str, line: int) -> str:
    """The output line's `id`: the same for the same line whichever replica runs it."""
    digest = hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"


def _output(line_ref: str, custom_id: str, status: int, request_id: str, body: bytes) -> bytes:
    """An output line, the answer's bytes embedded as they are (not parsed again)."""
    head = orjson.dumps(
        {"id": line_ref, "custom_id": custom_id, "response": {"status_code": status}}
    )
    rid = orjson.dumps(request_id)
    return head[:-2] + b',"request_id":' + rid + b',"body":' + body + b'},"error":null}'


def _result(
    line: int, custom_id: str, line_ref: str, failure: Failure, request_id: str
) -> LineResult:
    data = _output(line_ref, custom_id, failure.status, request_id, failure.body)
    return LineResult(line, custom_id, False, data)


def _gone_key() -> Failure:
    body = envelope(
        "The API key that created this batch is no longer valid.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )
    return Failure(401, orjson.dumps(body), {})


def crashed_line(batch_id: str, line: int, raw: bytes) -> LineResult:
    """A line Turnout itself failed on (a bug, logged): an error line rather than a batch
    that never ends."""
    custom_id = orjson.loads(raw).get("custom_id", "")
    body = envelope(
        "The server had an error while processing your request.", "server_error", None, None
    )
    failure = Failure(500, orjson.dumps(body), {})
    return _result(line, custom_id, line_id(batch_id, line), failure, "")


def expired_line(line: int, custom_id: str, batch_id: str) -> LineResult:
    """A line the batch's completion window ended before: in the error file, as OpenAI's."""
    error = {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    data = orjson.dumps(
        {"id": line_id(batch_id, line), "custom_id": custom_id, "response": None, "error": error}
    )
    return LineResult(line, custom_id, False, data)
