"""`/v1/completions` for a chat-only backend: every prompt its own one-message chat.

A batch is never merged into one conversation: prompt p becomes the chat request
`messages: [{"role": "user", "content": prompt_p}]` with the sampling fields chat shares
(anything not completions-only is carried, so `extra_body` fields still reach the backend;
`max_tokens` gets completions' default of 16 when unset). The chats run concurrently,
at most `max_parallel` at a time (`BoundedCalls`).
Choice i of prompt p becomes index `p * n + i`, so choices stay ordered by prompt as
OpenAI's are; usage is summed over the prompts (each chat read a different prompt).

Completions-only fields are handled here: `echo` prepends the prompt (`PromptEcho`),
`logprobs: k` asks chat for `logprobs: true, top_logprobs: k` and maps the answer back
to completions' four arrays; `best_of > 1` is refused with a 400. `suffix`, when the
planner chose to emulate it, becomes an instruction: a system message asking for only the
text that goes between the prompt and the suffix, both given in the user message. This is
lossy — a chat model may comment, quote, or repeat the surrounding text — and the response
says it was emulated; otherwise `suffix` is refused with a 400.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.base import Provider
from providers.emulation.echo import PromptEcho, text_prompts
from providers.emulation.fan_out import gather_or_cancel, sum_usage
from providers.emulation.interleave import interleave
from providers.emulation.text_logprobs import LogprobOffsets, text_logprobs
from providers.emulation.wrapper import (
    ProviderWrapper,
    choice_index,
    chunk_choices,
    include_usage,
)
from providers.local.bad_request import bad_request
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# What chat has no field for, or means something else by; handled in this module.
_COMPLETIONS_ONLY = frozenset({"prompt", "echo", "suffix", "best_of", "logprobs"})
_DEFAULT_MAX_TOKENS = 16  # completions' default; chat's is "until the model stops"
FILL_INSTRUCTION = (
    "Fill in the gap in a text. The user gives the text before the gap in <before> and "
    "the text after it in <after>. Reply with only the missing text that goes between "
    "them, exactly as it would appear in place: no explanation, no quotes, no code "
    "fences, and do not repeat the text before or after the gap."
)


class CompletionsViaChat(ProviderWrapper):
    """Serves `/v1/completions` with one chat call per prompt; other endpoints pass.
    `fill_suffix`: answer `suffix` with the fill-in instruction instead of a 400."""

    def __init__(self, inner: Provider, *, fill_suffix: bool = False) -> None:
        super().__init__(inner)
        self.fill_suffix = fill_suffix

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        served = self.inner.endpoints
        return served | {Endpoint.COMPLETIONS} if Endpoint.CHAT in served else served

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if request.endpoint is not Endpoint.COMPLETIONS:
            return await self.inner.complete(request)
        plan = _Plan(request.body, self.fill_suffix)
        responses = await gather_or_cancel([self.inner.complete(c) for c in plan.chats])
        first = responses[0].body
        choices = [
            plan.whole_choice(prompt, choice)
            for prompt, response in enumerate(responses)
            for choice in chunk_choices(response.body)
        ]
        body = {
            **_head(first),
            "choices": sorted(choices, key=choice_index),
            "usage": sum_usage(r.body.get("usage") for r in responses),
        }
        return ProviderResponse(body=body, headers=responses[0].headers)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if request.endpoint is not Endpoint.COMPLETIONS:
            return self.inner.stream(request)
        return self._text_stream(request)

    async def _text_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        plan = _Plan(request.body, self.fill_suffix)  # a 400 comes before the first chunk
        rewriter = _ChunkRewriter(plan, include_usage(request.body))
        async with contextlib.aclosing(interleave(self.inner, plan.chats)) as chunks:
            async for prompt, chunk in chunks:
                if (out := rewriter.rewrite(prompt, chunk)) is not None:
                    yield out
        if (last := rewriter.usage_chunk()) is not None:
            yield last


class _Plan:
    """One completions request as its chat requests, and how their choices map back."""

    def __init__(self, body: Mapping[str, Any], fill_suffix: bool) -> None:
        suffix = body.get("suffix")
        if suffix and not fill_suffix:
            raise bad_request("suffix is not supported by this deployment.", "suffix")
        best_of = body.get("best_of")
        if isinstance(best_of, int) and best_of > 1:
            raise bad_request("best_of > 1 is not supported by this deployment.", "best_of")
        self.echo = PromptEcho.for_request(body) if body.get("echo") is True else None
        prompts = text_prompts(body)
        n = body.get("n")
        self.n = n if isinstance(n, int) and n > 0 else 1
        logprobs = body.get("logprobs")
        self.logprobs = isinstance(logprobs, int) and not isinstance(logprobs, bool)
        shared = {k: v for k, v in body.items() if k not in _COMPLETIONS_ONLY}
        if shared.get("max_tokens") is None:
            shared["max_tokens"] = _DEFAULT_MAX_TOKENS
        if self.logprobs:
            shared.update(logprobs=True, top_logprobs=logprobs)
        self.chats = [
            ProviderRequest(Endpoint.CHAT, {**shared, "messages": _messages(prompt, suffix)})
            for prompt in prompts
        ]

    def index(self, prompt: int, choice: Mapping[str, Any]) -> int:
        return prompt * self.n + choice_index(choice)

    def whole_choice(self, prompt: int, choice: Mapping[str, Any]) -> JSONObject:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        out: JSONObject = {
            "text": content if isinstance(content, str) else "",
            "index": self.index(prompt, choice),
            "logprobs": text_logprobs(choice.get("logprobs")) if self.logprobs else None,
            "finish_reason": choice.get("finish_reason"),
        }
        if self.echo is not None:
            self.echo.prepend(out)
        return out


class _ChunkRewriter:
    """Chat chunks of the per-prompt streams → one stream of `text_completion` chunks."""

    def __init__(self, plan: _Plan, with_usage: bool) -> None:
        self.plan = plan
        self.with_usage = with_usage
        self.head: JSONObject | None = None
        self.usages: dict[int, Any] = {}
        self.finished: set[int] = set()
        self.offsets = LogprobOffsets()

    def rewrite(self, prompt: int, chunk: JSONObject) -> JSONObject | None:
        if self.head is None:
            self.head = _head(chunk)
        if chunk.get("usage") is not None:
            self.usages[prompt] = chunk["usage"]
        choices = [c for c in (self._choice(prompt, c) for c in chunk_choices(chunk)) if c]
        if not choices:
            return None  # a role chunk, a per-prompt usage chunk, or nothing to say
        out = {**self.head, "choices": choices}
        if self.with_usage:
            out["usage"] = None
        return out

    def _choice(self, prompt: int, choice: JSONObject) -> JSONObject | None:
        index = self.plan.index(prompt, choice)
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, Mapping) else None
        text = content if isinstance(content, str) else ""
        finish = choice.get("finish_reason") or None
        if finish and index in self.finished:
            finish = None  # exactly one finish_reason per index
        logprobs = None
        if self.plan.logprobs and choice.get("logprobs") is not None:
            logprobs = self.offsets.map(index, choice["logprobs"])
        if not text and not finish and logprobs is None:
            return None
        if finish:
            self.finished.add(index)
        out: JSONObject = {
            "text": text,
            "index": index,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        if self.plan.echo is not None:
            self.plan.echo.prepend_once(out)
        return out

    def usage_chunk(self) -> JSONObject | None:
        """The summed usage, only if every chat reported one: a part is not the whole."""
        if not self.with_usage or len(self.usages) < len(self.plan.chats) or self.head is None:
            return None
        return {**self.head, "choices": [], "usage": sum_usage(self.usages.values())}


def _messages(prompt: str, suffix: Any) -> list[JSONObject]:
    if not isinstance(suffix, str) or not suffix:
        return [{"role": "user", "content": prompt}]
    return [
        {"role": "system", "content": FILL_INSTRUCTION},
        {"role": "user", "content": f"<before>{prompt}</before>\n<after>{suffix}</after>"},
    ]


def _head(body: Mapping[str, Any]) -> JSONObject:
    """The top-level fields of a completions answer, taken from a chat answer."""
    head: JSONObject = {
        "id": body.get("id"),
        "object": "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if "system_fingerprint" in body:
        head["system_fingerprint"] = body["system_fingerprint"]
    return head
