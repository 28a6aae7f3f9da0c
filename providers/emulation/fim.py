"""`suffix` for a completions backend without it: the prompt rewritten into the model's
fill-in-the-middle template.

A deployment declares its template (`fim:` in config): a preset name, or a template with
`{prompt}` and `{suffix}` each written once. Each text prompt of the request becomes the
template filled with that prompt and the request's `suffix`, and `suffix` is removed; the
model then writes the middle. `echo` is answered here, never by the backend, so the echoed
text is the caller's prompt and not the template (echo with logprobs is refused by the
planner: the backend's prompt logprobs would be the template's).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from providers.base import Provider
from providers.emulation.echo import PromptEcho, text_prompts
from providers.emulation.wrapper import ProviderWrapper, chunk_choices
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# Templates as the models' own documentation gives them.
FIM_PRESETS = MappingProxyType(
    {
        "starcoder": "<fim_prefix>{prompt}<fim_suffix>{suffix}<fim_middle>",  # StarCoder 1/2
        "codellama": "<PRE> {prompt} <SUF>{suffix} <MID>",  # Code Llama
        # DeepSeek Coder; \uff5c is the full-width bar its special tokens are spelt with.
        "deepseek": (
            "<\uff5cfim▁begin\uff5c>{prompt}<\uff5cfim▁hole\uff5c>{suffix}<\uff5cfim▁end\uff5c>"
        ),
        "qwen": "<|fim_prefix|>{prompt}<|fim_suffix|>{suffix}<|fim_middle|>",  # Qwen2.5-Coder
        "codestral": "[SUFFIX]{suffix}[PREFIX]{prompt}",  # Codestral (suffix first)
    }
)
_SLOTS = re.compile(r"(\{prompt\}|\{suffix\})")


@dataclass(frozen=True, slots=True)
class FimTemplate:
    """A fill-in-the-middle prompt: literal text around one `{prompt}` and one `{suffix}`."""

    template: str

    @classmethod
    def parse(cls, value: str) -> FimTemplate:
        """A preset name or a template; ValueError saying what is expected otherwise."""
        template = FIM_PRESETS.get(value, value)
        slots = _SLOTS.findall(template)
        if sorted(slots) != ["{prompt}", "{suffix}"]:
            raise ValueError(
                f"fim must be a preset ({', '.join(FIM_PRESETS)}) or a template with "
                "{prompt} and {suffix} each written once"
            )
        return cls(template)

    def render(self, prompt: str, suffix: str) -> str:
        # Piece by piece: a prompt that itself contains "{suffix}" must stay as written.
        values = {"{prompt}": prompt, "{suffix}": suffix}
        return "".join(values.get(piece, piece) for piece in _SLOTS.split(self.template))


def _from_config(value: Any) -> FimTemplate:
    if isinstance(value, FimTemplate):
        return value
    if not isinstance(value, str):
        raise ValueError("fim must be a preset name or a template string")
    return FimTemplate.parse(value)


# A deployment's `fim:` in config: a preset name or a template.
FimSetting = Annotated[
    FimTemplate, PlainValidator(_from_config), PlainSerializer(lambda fim: fim.template)
]


class FillInTheMiddle(ProviderWrapper):
    """Serves `suffix` on `/v1/completions` through the deployment's FIM template."""

    def __init__(self, inner: Provider, template: FimTemplate) -> None:
        super().__init__(inner)
        self.template = template

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if not _has_suffix(request):
            return await self.inner.complete(request)
        upstream, echo = self._rewrite(request)
        response = await self.inner.complete(upstream)
        if echo is not None:
            for choice in chunk_choices(response.body):
                echo.prepend(choice)
        return response

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if not _has_suffix(request):
            return self.inner.stream(request)
        return self._filled_stream(request)

    async def _filled_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        upstream, echo = self._rewrite(request)  # a 400 here comes before the first chunk
        async with contextlib.aclosing(self.inner.stream(upstream)) as chunks:
            async for chunk in chunks:
                if echo is not None:
                    for choice in chunk_choices(chunk):
                        echo.prepend_once(choice)
                yield chunk

    def _rewrite(self, request: ProviderRequest) -> tuple[ProviderRequest, PromptEcho | None]:
        body = dict(request.body)
        suffix = str(body.pop("suffix") or "")
        echo = PromptEcho.for_request(body) if body.pop("echo", None) is True else None
        filled = [self.template.render(prompt, suffix) for prompt in text_prompts(body)]
        body["prompt"] = filled[0] if isinstance(body.get("prompt"), str) else filled
        return ProviderRequest(request.endpoint, body), echo


def _has_suffix(request: ProviderRequest) -> bool:
    return request.endpoint is Endpoint.COMPLETIONS and request.body.get("suffix") is not None
