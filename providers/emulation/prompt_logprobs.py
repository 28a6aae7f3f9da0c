"""`echo` with `logprobs` for a completions backend without echo that offers vLLM's
`prompt_logprobs` (declared with `capabilities: {prompt_logprobs: true}`).

The call goes without `echo` and with `prompt_logprobs: k` (k = the caller's `logprobs`).
vLLM answers, per choice, a list with one entry per prompt token: `null` for the first
(nothing precedes it), then `{token_id: {logprob, rank, decoded_token}}` whose first key is
the prompt's own token, followed by the k likeliest. These become the front of the
choice's completions logprobs: `tokens` (the first token's text is what the prompt has
before the others' text), `token_logprobs` and `top_logprobs` with null first, as OpenAI
and vLLM answer an echo; `text_offset` counts from the start of the prompt, and the
completion's own offsets move past it. The text becomes prompt + completion.

vLLM gives prompt logprobs on whole answers only, so a stream is one whole call replayed
as chunks. Without `logprobs` this wrapper steps aside (plain echo emulation does it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from providers.emulation.echo import text_prompts
from providers.emulation.fake_stream import synthesize_chunks
from providers.emulation.wrapper import ProviderWrapper, choice_index, chunk_choices, include_usage
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class PromptLogprobsEcho(ProviderWrapper):
    """Echo with logprobs from the backend's prompt logprobs."""

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if not _applies(request):
            return await self.inner.complete(request)
        return await self._echoed(request)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if not _applies(request):
            return self.inner.stream(request)
        return self._replayed(request)

    async def _replayed(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options")}
        whole = await self._echoed(ProviderRequest(request.endpoint, body))
        for chunk in synthesize_chunks(request.endpoint, whole.body, include_usage(request.body)):
            yield chunk

    async def _echoed(self, request: ProviderRequest) -> ProviderResponse:
        prompts = text_prompts(request.body)
        n = request.body.get("n")
        n = n if isinstance(n, int) and n > 0 else 1
        body = {k: v for k, v in request.body.items() if k != "echo"}
        body["prompt_logprobs"] = request.body["logprobs"]
        response = await self.inner.complete(ProviderRequest(request.endpoint, body))
        shared = response.body.pop("prompt_logprobs", None)  # chat-style, top level
        for choice in chunk_choices(response.body):
            prompt = prompts[min(choice_index(choice) // n, len(prompts) - 1)]
            entries = choice.pop("prompt_logprobs", None) or shared
            if not isinstance(entries, list):
                raise UpstreamError.protocol(
                    f"{self.name}: declared prompt_logprobs, but the answer has none"
                )
            choice["logprobs"] = echo_logprobs(prompt, entries, choice.get("logprobs"))
            choice["text"] = prompt + (choice.get("text") or "")
        return response


def echo_logprobs(prompt: str, entries: Sequence[Any], completion: Any) -> JSONObject:
    """Completions logprobs over prompt + completion, from vLLM's `prompt_logprobs`."""
    tokens: list[str] = []
    token_logprobs: list[Any] = [None]
    top_logprobs: list[Any] = [None]
    for entry in entries[1:]:
        ranked = _ranked(entry)
        token, logprob = ranked[0] if ranked else ("", None)
        tokens.append(token)
        token_logprobs.append(logprob)
        top: dict[str, Any] = {}
        for text, value in ranked:
            top.setdefault(text, value)  # two ids may decode alike: keep the first
        top_logprobs.append(top)
    rest = "".join(tokens)
    first = prompt[: len(prompt) - len(rest)] if prompt.endswith(rest) else ""
    tokens.insert(0, first)
    offsets: list[int] = []
    position = 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    merged: JSONObject = {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }
    if isinstance(completion, Mapping):
        _append_completion(merged, completion, len(prompt))
    return merged


def _ranked(entry: Any) -> list[tuple[str, Any]]:
    """(decoded token, logprob) of one prompt position, the prompt's own token first."""
    if not isinstance(entry, Mapping):
        return []
    ranked = []
    for value in entry.values():
        if isinstance(value, Mapping):
            decoded = value.get("decoded_token")
            ranked.append((decoded if isinstance(decoded, str) else "", value.get("logprob")))
    return ranked


def _append_completion(merged: JSONObject, completion: Mapping[str, Any], start: int) -> None:
    offsets = [o for o in completion.get("text_offset") or [] if isinstance(o, int)]
    base = offsets[0] if offsets else 0
    merged["text_offset"] += [start + o - base for o in offsets]
    for key in ("tokens", "token_logprobs", "top_logprobs"):
        merged[key] += list(completion.get(key) or [])


def _applies(request: ProviderRequest) -> bool:
    body = request.body
    return (
        request.endpoint is Endpoint.COMPLETIONS
        and body.get("echo") is True
        and isinstance(body.get("logprobs"), int)
        and not isinstance(body.get("logprobs"), bool)
    )
