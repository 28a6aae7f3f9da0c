"""The in-process text generator as a `Provider`: OpenAI completions and chat, whole or
streamed, over a continuous-batching `Engine`. Framework-agnostic: a loader supplies the
runner, sampler and tokenizer (PyTorch or JAX)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.errors import Failure, UpstreamError
from providers.local.bad_request import bad_request
from providers.local.candidate import CandidateOutput, Delta, Finished
from providers.local.engine import DEFAULT_PREFILL_CHUNK_TOKENS, Engine
from providers.local.params import GenerationRequest
from providers.local.responses import (
    ChatStream,
    CompletionStream,
    FinishReason,
    StreamHeader,
    chat_choice,
    chat_completion_id,
    chat_response,
    completion_choice,
    completion_id,
    completion_response,
)
from providers.local.run import GenerationRun, PreparedPrompt
from providers.local.runner import ModelRunner, Sampler
from providers.local.tokenizer import TokenizerAdapter
from providers.startup import StartGate
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


@dataclass(frozen=True, slots=True)
class LocalModel:
    runner: ModelRunner
    sampler: Sampler
    adapter: TokenizerAdapter
    prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS  # the engine's per-step budget


class LocalGenerator(Provider):
    def __init__(
        self, name: str, load: Callable[[], LocalModel], capabilities: Capabilities
    ) -> None:
        super().__init__(name)
        self._load = load
        self._capabilities = capabilities
        self._model: LocalModel | None = None
        self._engine: Engine | None = None
        self._loaded = StartGate(name, "the model failed to load")

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.COMPLETIONS, Endpoint.CHAT})

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def engine(self) -> Engine | None:
        """Exposes queue depth and in-flight count (least-busy routing reads them)."""
        return self._engine

    def load(self) -> int | None:
        engine = self._engine
        return None if engine is None else engine.queue_depth + engine.in_flight

    async def count_chat_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The chat template's tokens for `body`'s messages and tools, as a request renders
        them (None until the model is loaded)."""
        model = self._model
        if model is None:
            return None
        messages, tools = body.get("messages") or [], body.get("tools")
        ids = await asyncio.to_thread(model.adapter.render_chat, messages, tools)
        return len(ids)

    async def cached_prompt_tokens(self, body: Mapping[str, Any]) -> tuple[int, int] | None:
        """(Leading tokens of `body`'s prompt this engine's prefix store holds, the prompt's
        tokens), the prompt rendered and checked as a request renders it: affinity routing
        asks before it sends. None until the model is loaded, for a batch of completions
        prompts, and for a request this deployment would refuse (its own call says why).
        Templating, tokenizing and the lookup run on a worker thread; the lookup reads the
        index while the engine's thread may write it (one dict read per block: at worst
        the answer is a step old)."""
        model, engine = self._model, self._engine
        if model is None or engine is None:
            return None
        try:
            if "messages" in body:
                gen = GenerationRequest.from_chat(body)
            else:
                gen = GenerationRequest.from_completions(body)
        except UpstreamError:
            return None
        if gen.kind != "chat" and len(gen.prompts) != 1:
            return None
        return await asyncio.to_thread(_held, gen, model, engine)

    async def start(self) -> None:
        await self._loaded.run(self._start())

    async def _start(self) -> None:
        model = await asyncio.to_thread(self._load)
        self._model = model
        self._engine = Engine(
            model.runner,
            model.sampler,
            self.name,
            prefill_chunk_tokens=model.prefill_chunk_tokens,
        )

    async def check(self) -> None:
        """Healthy while the engine's decode thread runs; nothing goes over a network."""
        engine = self._engine
        if engine is None or not engine.running:
            raise UpstreamError.unavailable(f"{self.name}: the model's engine is not running")

    async def aclose(self) -> None:
        self._loaded.close()
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)
            self._engine = None

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        run = await self._run(request)
        try:
            run.start()
            async for _ in run.events():
                pass
        finally:
            run.cancel()
        return ProviderResponse(body=_whole_response(run, request))

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        run = await self._run(request)
        gen = run.request
        header = StreamHeader(
            chat_completion_id() if gen.kind == "chat" else completion_id(),
            int(time.time()),
            str(request.body.get("model")),
            include_usage=gen.include_usage,
        )
        writer = ChatStream(header) if gen.kind == "chat" else CompletionStream(header)
        sent_logprobs: dict[int, int] = {}
        try:
            run.start()
            async for prompt, event in run.events():
                output = run.outputs[prompt][event.candidate]
                index = prompt * gen.n + event.candidate
                text = event.text
                if gen.echo and index not in sent_logprobs:
                    text = run.prompts[prompt].text + text
                start = sent_logprobs.get(index, 0)
                sent_logprobs[index] = event.logprobs_end
                logprobs = _logprobs(output, gen, start, event.logprobs_end)
                if isinstance(event, Delta):
                    chunks = writer.delta(index, text, logprobs)
                elif isinstance(event, Finished):
                    reason = _finish_reason(event.reason)
                    chunks = writer.finish(index, reason, text, logprobs)
                for chunk in chunks:
                    yield chunk
            for chunk in writer.usage(run.usage()):
                yield chunk
        finally:
            run.cancel()

    async def _run(self, request: ProviderRequest) -> GenerationRun:
        # A request that arrives while the model loads waits for it (see providers.startup).
        await self._loaded.wait()
        model, engine = self._model, self._engine
        if model is None or engine is None:  # closed while this request waited
            raise UpstreamError.own_limit(f"{self.name}: closed")
        body = request.body
        if request.endpoint is Endpoint.CHAT:
            gen = GenerationRequest.from_chat(body)
        else:
            gen = GenerationRequest.from_completions(body)
        adapter = model.adapter
        gen.check_vocab(adapter.vocab_size)
        slots = model.runner.max_slots
        candidates = max(gen.n, gen.best_of)
        if candidates > slots:
            param = "best_of" if gen.best_of > gen.n else "n"
            raise bad_request(
                f"This deployment samples at most {slots} candidates per prompt; "
                f"{param}={candidates} asks for more.",
                param,
            )
        # Templating and tokenizing a prompt of megabytes take seconds: on a worker thread,
        # so that other requests' streams flow meanwhile.
        prompts = await asyncio.to_thread(_prepare_prompts, gen, adapter, model.runner.max_context)
        return GenerationRun(engine, adapter, gen, prompts, background=request.background)


def _prepare_prompts(
    gen: GenerationRequest, adapter: TokenizerAdapter, context: int
) -> list[PreparedPrompt]:
    if gen.kind == "chat":
        sources: list[Any] = [None]
    else:
        sources = list(gen.prompts)
    prepared = []
    for source in sources:
        if gen.kind == "chat":
            ids = adapter.render_chat(
                list(gen.messages), gen.tools, gen.tool_choice, continue_final=gen.continue_final
            )
            text = ""
        elif gen.suffix is not None:
            ids = adapter.fim_prompt(source, gen.suffix)
            text = source if isinstance(source, str) else adapter.decode(source)
        else:
            ids = adapter.encode_prompt(source)
            text = (
                source
                if isinstance(source, str)
                else adapter.decode(ids, skip_special_tokens=False)
            )
        wanted = gen.max_tokens if gen.max_tokens is not None else context - len(ids)
        if len(ids) + max(wanted, 1 if gen.max_tokens is None else 0) > context:
            raise _context_error(gen, len(ids), wanted, context)
        prepared.append(PreparedPrompt(ids, text, wanted))
    return prepared


def _held(gen: GenerationRequest, model: LocalModel, engine: Engine) -> tuple[int, int] | None:
    try:
        [prompt] = _prepare_prompts(gen, model.adapter, model.runner.max_context)
    except UpstreamError:
        return None
    return engine.prefix_cache.cached_tokens(prompt.ids), len(prompt.ids)


def _context_error(gen: GenerationRequest, prompt: int, wanted: int, context: int) -> UpstreamError:
    where = "messages" if gen.kind == "chat" else "prompt"
    return UpstreamError(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt + max(wanted, 0)} tokens ({prompt} in the {where}, {max(wanted, 0)} in the "
        f"completion). Please reduce the length of the {where} or completion.",
        failure=Failure.STATUS,
        status=400,
        type="invalid_request_error",
        param=where,
        code="context_length_exceeded",
    )


def _finish_reason(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _logprobs(
    output: CandidateOutput, gen: GenerationRequest, start: int, end: int | None
) -> dict[str, Any] | None:
    if output.logprobs is None or gen.logprobs is None:
        return None
    if gen.kind == "chat":
        return output.logprobs.chat_logprobs(start, end)
    return output.logprobs.completion_logprobs(start, end)


def _whole_response(run: GenerationRun, request: ProviderRequest) -> JSONObject:
    gen = run.request
    model = str(request.body.get("model"))
    created = int(time.time())
    choices = []
    for prompt_index, outputs in enumerate(run.outputs):
        chosen = outputs
        if gen.best_of > gen.n:  # rank by mean logprob per token, keep the best n
            chosen = sorted(outputs, key=lambda o: o.mean_logprob, reverse=True)[: gen.n]
        for rank, output in enumerate(chosen):
            index = prompt_index * gen.n + rank
            reason = _finish_reason(output.finish_reason)
            logprobs = _logprobs(output, gen, 0, None)
            if gen.kind == "chat":
                choices.append(chat_choice(index, output.text, reason, logprobs))
            else:
                text = (run.prompts[prompt_index].text if gen.echo else "") + output.text
                choices.append(completion_choice(index, text, reason, logprobs))
    if gen.kind == "chat":
        return chat_response(chat_completion_id(), created, model, choices, run.usage())
    return completion_response(completion_id(), created, model, choices, run.usage())
