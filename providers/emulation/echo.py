"""`echo` for a completions backend without it: the prompt, prepended Turnout-side.

`echo` is removed upstream and each prompt's text is put in front of its choices' text:
choice index `j` belongs to prompt `j // n` (choices are prompt-major). When streaming,
the prompt rides on the first chunk of each index. Only text prompts can be echoed (token
ids would need the backend's tokenizer to turn back into text), and `logprobs` together
with `echo` is refused: the prompt tokens' logprobs cannot be made up.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.emulation.wrapper import ProviderWrapper, choice_index, chunk_choices
from providers.errors import UpstreamError
from providers.local.bad_request import bad_request
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class EchoEmulation(ProviderWrapper):
    """Serves `echo: true` on `/v1/completions` by prepending the prompts itself."""

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if not _echoed(request):
            return await self.inner.complete(request)
        echo = PromptEcho.for_request(request.body)
        response = await self.inner.complete(_without_echo(request))
        for choice in chunk_choices(response.body):
            echo.prepend(choice)
        return response

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if not _echoed(request):
            return self.inner.stream(request)
        return self._echoed_stream(request)

    async def _echoed_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        echo = PromptEcho.for_request(request.body)  # raises before the first chunk
        async with contextlib.aclosing(self.inner.stream(_without_echo(request))) as chunks:
            async for chunk in chunks:
                for choice in chunk_choices(chunk):
                    echo.prepend_once(choice)
                yield chunk


class PromptEcho:
    """The prompt texts of one request, put in front of the text of their choices."""

    def __init__(self, prompts: list[str], n: int) -> None:
        self.prompts = prompts
        self.n = n
        self.echoed: set[int] = set()  # streamed indices whose prompt was sent

    @classmethod
    def for_request(cls, body: Mapping[str, Any]) -> PromptEcho:
        """The echo for a completions body, or a 400 when it cannot be emulated."""
        if body.get("logprobs") is not None:
            raise bad_request(
                "echo with logprobs is not supported by this deployment: the prompt "
                "tokens' logprobs cannot be computed without the backend.",
                "echo",
            )
        n = body.get("n")
        return cls(text_prompts(body), n if isinstance(n, int) and n > 0 else 1)

    def prompt_of(self, index: int) -> str:
        prompt = index // self.n
        return self.prompts[prompt] if prompt < len(self.prompts) else ""

    def prepend(self, choice: JSONObject) -> None:
        """A whole choice: its text becomes prompt + text."""
        choice["text"] = self.prompt_of(choice_index(choice)) + (choice.get("text") or "")

    def prepend_once(self, choice: JSONObject) -> None:
        """A streamed choice: the prompt goes on the first chunk of each index only."""
        index = choice_index(choice)
        if index not in self.echoed:
            self.echoed.add(index)
            self.prepend(choice)


def text_prompts(body: Mapping[str, Any]) -> list[str]:
    """The prompts of a completions body, one per batch element; 400 for token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise _token_prompts() if isinstance(prompt, list) and prompt else _no_prompt()


def _token_prompts() -> UpstreamError:
    return bad_request(
        "Token-id prompts are not supported by this deployment: token ids are "
        "tokenizer-specific; send the prompt as text.",
        "prompt",
    )


def _no_prompt() -> UpstreamError:
    return bad_request("prompt must be a string or a non-empty list of strings.", "prompt")


def _echoed(request: ProviderRequest) -> bool:
    return request.endpoint is Endpoint.COMPLETIONS and request.body.get("echo") is True


def _without_echo(request: ProviderRequest) -> ProviderRequest:
    body = {k: v for k, v in request.body.items() if k != "echo"}
    return ProviderRequest(request.endpoint, body)
