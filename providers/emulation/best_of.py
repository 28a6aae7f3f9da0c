"""`best_of` for a completions backend without it: ask for best_of candidates, keep the best n.

The candidates come from one call with `n: best_of` when the backend takes that n natively,
else from `FanOutN` (best_of calls with `n: 1`, `seed + i` each). `logprobs` is raised to at
least 0 so every candidate carries its sampled tokens' logprobs. Per prompt, candidates are
ranked by MEAN logprob per token (OpenAI's rule; a sum would favour short answers), `null`
entries ignored; the top n are kept, re-indexed prompt_index * n + rank, and stripped of
logprobs unless the caller asked for them. Usage is left as the backend reported it, which
counts the completion tokens of every candidate: OpenAI bills all best_of candidates (and,
fanned out, each call's prompt too: `FanOutN` sums them).

Results cannot be streamed: a stream with best_of > n is refused with a 400, as OpenAI does.
With `echo`, the backend's logprobs cover the prompt tokens too, and they count in the mean.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.base import Provider
from providers.emulation.fan_out import FanOutN
from providers.emulation.wrapper import ProviderWrapper, choice_index, chunk_choices
from providers.errors import UpstreamError
from providers.local.bad_request import bad_request
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class BestOfEmulation(ProviderWrapper):
    """Ranks best_of candidates Turnout-side when the backend has no `best_of`."""

    def __init__(self, inner: Provider, max_native_n: int | None) -> None:
        """`max_native_n`: the largest n `inner` takes in one call (None: any)."""
        super().__init__(inner)
        self.max_native_n = max_native_n
        self.fanned_out = FanOutN(inner)

    def candidates(self, n: int) -> Provider:
        """Where `n` candidates (or the n left once best_of is removed) come from."""
        native = self.max_native_n is None or n <= self.max_native_n
        return self.inner if native else self.fanned_out

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if not _has_best_of(request):
            return await self.inner.complete(request)
        best_of, n = _best_of_and_n(request.body)
        if best_of <= n:
            return await self.candidates(n).complete(_without_best_of(request))
        response = await self.candidates(best_of).complete(_candidates_request(request, best_of))
        body = dict(response.body)
        body["choices"] = self._best(
            chunk_choices(body), best_of, n, keep_logprobs=_asks_logprobs(request.body)
        )
        return ProviderResponse(body=body, headers=response.headers)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if not _has_best_of(request):
            return self.inner.stream(request)
        try:
            best_of, n = _best_of_and_n(request.body)
        except UpstreamError as exc:
            return _refused(exc)
        if best_of > n:
            return _refused(
                bad_request("best_of > n cannot be streamed: results must be ranked.", "best_of")
            )
        return self.candidates(n).stream(_without_best_of(request))

    def _best(
        self, choices: list[JSONObject], best_of: int, n: int, *, keep_logprobs: bool
    ) -> list[JSONObject]:
        """Per prompt, the n candidates with the highest mean logprob, re-indexed."""
        by_prompt: dict[int, list[tuple[float, JSONObject]]] = {}
        for choice in sorted(choices, key=choice_index):
            score = mean_logprob(choice)
            if score is None:
                raise UpstreamError.protocol(
                    f"{self.name}: the backend returned no logprobs for a best_of candidate, "
                    "so the candidates cannot be ranked"
                )
            by_prompt.setdefault(choice_index(choice) // best_of, []).append((score, choice))
        kept: list[JSONObject] = []
        for prompt in sorted(by_prompt):
            # A stable sort: candidates that tie keep the backend's order.
            ranked = sorted(by_prompt[prompt], key=lambda scored: scored[0], reverse=True)
            for rank, (_, choice) in enumerate(ranked[:n]):
                out = {**choice, "index": prompt * n + rank}
                if not keep_logprobs:
                    out["logprobs"] = None
                kept.append(out)
        return kept


def mean_logprob(choice: Mapping[str, Any]) -> float | None:
    """Mean of the choice's `token_logprobs`, nulls ignored; None if it has no logprobs.

    A candidate with no scored token at all (an empty completion) ranks last.
    """
    logprobs = choice.get("logprobs")
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list):
        return None
    scores = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(scores) / len(scores) if scores else -math.inf


def _has_best_of(request: ProviderRequest) -> bool:
    return request.endpoint is Endpoint.COMPLETIONS and "best_of" in request.body


def _best_of_and_n(body: Mapping[str, Any]) -> tuple[int, int]:
    """(best_of, n), best_of 1 when unset; a 400 when best_of > 1 is below n."""
    n = _positive_int(body.get("n"))
    best_of = _positive_int(body.get("best_of"))
    if 1 < best_of < n:
        raise bad_request("best_of must be greater than or equal to n.", "best_of")
    return best_of, n


def _positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _asks_logprobs(body: Mapping[str, Any]) -> bool:
    # `logprobs: 0` is a request too: it returns the sampled tokens' logprobs.
    return body.get("logprobs") is not None


def _without_best_of(request: ProviderRequest) -> ProviderRequest:
    body = {k: v for k, v in request.body.items() if k != "best_of"}
    return ProviderRequest(request.endpoint, body)


def _candidates_request(request: ProviderRequest, best_of: int) -> ProviderRequest:
    """best_of candidates per prompt, each with at least its sampled tokens' logprobs."""
    body = {k: v for k, v in request.body.items() if k != "best_of"}
    asked = body.get("logprobs")
    asked = asked if isinstance(asked, int) and not isinstance(asked, bool) else 0
    body.update(n=best_of, logprobs=max(asked, 0))
    return ProviderRequest(request.endpoint, body)


async def _refused(error: UpstreamError) -> AsyncGenerator[JSONObject, None]:
    """A stream that fails before its first chunk, as `Provider.stream` promises."""
    raise error
    yield {}  # unreachable: makes this an async generator
