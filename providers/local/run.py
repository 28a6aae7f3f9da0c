"""One request's jobs in the engine, seen from the event loop: submits a job per prompt,
turns the engine thread's callbacks into an asyncio event stream, cancels on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from providers.errors import Failure, UpstreamError
from providers.local.candidate import CandidateOutput, Delta, Event, Failed, Finished
from providers.local.engine import Engine
from providers.local.job import Job
from providers.local.params import GenerationRequest
from providers.local.runner import PromptScores
from providers.local.tokenizer import TokenizerAdapter


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    ids: list[int]
    text: str  # as an echo shows it
    max_new_tokens: int


class GenerationRun:
    def __init__(
        self,
        engine: Engine,
        adapter: TokenizerAdapter,
        request: GenerationRequest,
        prompts: list[PreparedPrompt],
        *,
        background: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.request = request
        self.prompts = prompts
        self.candidates = request.best_of if request.best_of > request.n else request.n
        self.outputs: list[list[CandidateOutput]] = []
        self._jobs: list[Job] = []
        self._open = 0
        wants_logprobs = request.logprobs is not None
        scores = request.logprobs if request.echo and wants_logprobs else None
        for index, prompt in enumerate(prompts):
            emit = partial(self._emit, index)
            outputs = [
                CandidateOutput(c, adapter, prompt.ids, request.stop, wants_logprobs, emit)
                for c in range(self.candidates)
            ]
            self.outputs.append(outputs)
            self._jobs.append(
                Job(
                    prompt=prompt.ids,
                    rows=[request.row_sampling(c) for c in range(self.candidates)],
                    sinks=outputs,
                    max_new_tokens=prompt.max_new_tokens,
                    score_prompt=scores,
                    on_prompt_scores=partial(_share_scores, outputs, prompt),
                    on_error=lambda exc, emit=emit: emit(Failed(exc)),  # type: ignore[misc]
                    background=background,
                )
            )
        self._engine = engine

    def start(self) -> None:
        self._engine.submit_all(self._jobs)
        self._open = len(self._jobs) * self.candidates

    def cancel(self) -> None:
        for job in self._jobs:
            job.cancel()

    async def events(self) -> AsyncIterator[tuple[int, Delta | Finished]]:
        """(prompt index, event) until every candidate has finished."""
        while self._open:
            prompt, event = await self._queue.get()
            if isinstance(event, Failed):
                raise UpstreamError(
                    f"the local model failed: {event.error}",
                    failure=Failure.STATUS,
                    status=500,
                    type="server_error",
                ) from event.error
            if isinstance(event, Finished):
                self._open -= 1
            yield prompt, event

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage, with `prompt_tokens_details.cached_tokens`: the prompt tokens the
        engine loaded from its prefix store instead of computing (read once every candidate
        has finished: the engine sets them before a job's first token)."""
        prompt_tokens = sum(len(p.ids) for p in self.prompts)
        completion_tokens = sum(o.generated for outputs in self.outputs for o in outputs)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": sum(j.cached_tokens for j in self._jobs)},
        }

    def _emit(self, prompt: int, event: Event) -> None:
        """Called on the engine thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (prompt, event))


def _share_scores(
    outputs: list[CandidateOutput], prompt: PreparedPrompt, scores: PromptScores
) -> None:
    for output in outputs:
        output.add_prompt_scores(prompt.ids, scores, prompt.text)
