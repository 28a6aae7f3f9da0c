from __future__ import annotations

from typing import Any

import pytest
from openai.types import Completion

from providers.emulation import FillInTheMiddle, FimTemplate
from providers.emulation.fim import FIM_PRESETS
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from tests.fakes.openai_upstream import FakeOpenAIUpstream

from .conftest import chat, completion, posted

STARCODER = FimTemplate.parse("starcoder")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("starcoder", "<fim_prefix>P<fim_suffix>S<fim_middle>"),
        ("codellama", "<PRE> P <SUF>S <MID>"),
        ("deepseek", "<\uff5cfim▁begin\uff5c>P<\uff5cfim▁hole\uff5c>S<\uff5cfim▁end\uff5c>"),
        ("qwen", "<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>"),
        ("codestral", "[SUFFIX]S[PREFIX]P"),
    ],
)
def test_presets_render_the_models_documented_templates(preset: str, expected: str) -> None:
    assert FimTemplate.parse(preset).render("P", "S") == expected


def test_every_preset_is_tested() -> None:
    assert set(FIM_PRESETS) == {"starcoder", "codellama", "deepseek", "qwen", "codestral"}


def test_a_custom_template_and_braces_inside_the_text_stay_as_written() -> None:
    template = FimTemplate.parse("<s>{suffix}|{prompt}<m>")
    assert template.render("f({suffix})", "{prompt}") == "<s>{prompt}|f({suffix})<m>"


@pytest.mark.parametrize(
    "value", ["nope", "{prompt} only", "{prompt}{suffix}{suffix}", "{prompt}{prompt}{suffix}"]
)
def test_a_template_needs_each_slot_once(value: str) -> None:
    with pytest.raises(ValueError, match="each written once"):
        FimTemplate.parse(value)


async def test_each_prompt_is_filled_into_the_template_and_suffix_removed(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(["def f(", "x = "], suffix=" return 1", n=2)
    body = (await FillInTheMiddle(provider, STARCODER).complete(request)).body
    Completion.model_validate(body)
    sent = posted(upstream)[0]
    filled = [STARCODER.render(p, " return 1") for p in ("def f(", "x = ")]
    assert sent["prompt"] == filled
    assert "suffix" not in sent
    assert [c["text"] for c in body["choices"]] == ["echo: " + p for p in filled for _ in range(2)]


async def test_echo_is_the_callers_prompt_not_the_template(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion("def f(", suffix="!", echo=True)
    body = (await FillInTheMiddle(provider, STARCODER).complete(request)).body
    assert "echo" not in posted(upstream)[0]
    assert body["choices"][0]["text"] == "def f(" + "echo: " + STARCODER.render("def f(", "!")


async def test_streamed_echo_rides_on_the_first_chunk_of_each_index(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(["a", "b"], suffix="z", echo=True, stream=True)
    chunks = [c async for c in FillInTheMiddle(provider, STARCODER).stream(request)]
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {i: p + "echo: " + STARCODER.render(p, "z") for i, p in enumerate("ab")}


async def test_requests_without_suffix_pass_untouched(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    wrapper = FillInTheMiddle(provider, STARCODER)
    await wrapper.complete(completion("plain", echo=True))
    await wrapper.complete(chat("hi", suffix="ignored by chat"))
    first, second = posted(upstream)
    assert (first["prompt"], first["echo"]) == ("plain", True)
    assert second["suffix"] == "ignored by chat"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"prompt": [1, 2, 3]}, "prompt"), ({"echo": True, "logprobs": 1}, "echo")],
)
async def test_what_cannot_be_templated_is_a_400(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, extra: dict[str, Any], param: str
) -> None:
    request = completion("x", suffix="y")
    request = type(request)(request.endpoint, {**request.body, **extra})
    with pytest.raises(UpstreamError) as caught:
        await FillInTheMiddle(provider, STARCODER).complete(request)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert posted(upstream) == []
