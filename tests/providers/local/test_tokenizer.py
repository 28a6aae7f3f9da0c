"""TokenizerAdapter on SmolLM2's real tokenizer, plus the SentencePiece and byte families."""

from __future__ import annotations

import pytest

from providers.errors import UpstreamError
from providers.local.tokenizer import TokenizerAdapter
from tests.local_tokenizer import smollm2_tokenizer
from tests.providers.local.test_text import SAMPLES
from tests.providers.local.tiny_tokenizers import byte_tokenizer, sentencepiece_tokenizer

SMOLLM2_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n"
)


@pytest.fixture(scope="module")
def smol() -> TokenizerAdapter:
    return TokenizerAdapter(smollm2_tokenizer())


def _all_adapters() -> list[tuple[TokenizerAdapter, str]]:
    """Each adapter with what its tokenizer puts in front of a text (SentencePiece: ▁)."""
    return [
        (TokenizerAdapter(smollm2_tokenizer()), ""),
        (TokenizerAdapter(sentencepiece_tokenizer()), " "),
        (TokenizerAdapter(byte_tokenizer()), ""),
    ]


def test_token_bytes_round_trip_every_family() -> None:
    for adapter, lead in _all_adapters():
        for text in SAMPLES:
            ids = adapter.encode_text(text)
            joined = b"".join(adapter.raw_bytes(token) for token in ids)
            assert joined == (lead + text if text else "").encode(), (lead, text)
            assert [b for token in ids for b in adapter.token_bytes(token)] == list(joined)


def test_sentencepiece_round_trip_includes_the_prepended_space() -> None:
    adapter = TokenizerAdapter(sentencepiece_tokenizer())
    ids = adapter.encode_text("Hello é")
    assert b"".join(adapter.raw_bytes(token) for token in ids) == " Hello é".encode()
    assert adapter.token_text(ids[0]) == " Hello"


def test_token_text_as_openai_shows_it(smol: TokenizerAdapter) -> None:
    (paris,) = smol.encode_text(" Paris")
    assert smol.token_text(paris) == " Paris"
    assert smol.token_bytes(paris) == list(b" Paris")
    assert smol.token_text(2) == "<|im_end|>"
    assert smol.token_bytes(2) == list(b"<|im_end|>")


def test_partial_utf8_tokens_show_their_raw_bytes(smol: TokenizerAdapter) -> None:
    ids = smol.encode_text(" 😀")
    assert len(ids) == 2  # the emoji's bytes are split over two tokens
    first, second = (smol.raw_bytes(token) for token in ids)
    assert first + second == " 😀".encode()
    assert smol.token_text(ids[0]) == "bytes:" + "".join(f"\\x{b:02x}" for b in first)
    assert smol.token_bytes(ids[1]) == list(second)


def test_eos_and_bos(smol: TokenizerAdapter) -> None:
    assert smol.eos_ids == {0, 2}  # <|endoftext|>, <|im_end|>
    assert smol.bos_prefix == ()  # SmolLM2 adds nothing in front of a prompt
    spm = TokenizerAdapter(sentencepiece_tokenizer())
    assert spm.bos_prefix == (1,)
    assert spm.eos_ids == {2}


def test_encode_prompt(smol: TokenizerAdapter) -> None:
    tokenizer = smollm2_tokenizer()
    assert smol.encode_prompt("Hello world") == tokenizer.encode("Hello world")
    assert smol.encode_prompt([5, 6, 7]) == [5, 6, 7]
    assert smol.encode_prompt("") == [tokenizer.bos_token_id]
    spm = TokenizerAdapter(sentencepiece_tokenizer())
    assert spm.encode_prompt("Hello")[0] == 1


@pytest.mark.parametrize("bad", [[-1], [49152], [1, 2, 10**9]])
def test_encode_prompt_rejects_unknown_ids(smol: TokenizerAdapter, bad: list[int]) -> None:
    with pytest.raises(UpstreamError) as caught:
        smol.encode_prompt(bad)
    assert caught.value.status == 400
    assert caught.value.param == "prompt"
    assert caught.value.type == "invalid_request_error"


def test_smollm2_has_no_fim_tokens(smol: TokenizerAdapter) -> None:
    # StarCoder's vocabulary had <fim_prefix> & co.; SmolLM2 reused those slots for chat.
    assert smol.fim_tokens() is None
    with pytest.raises(UpstreamError) as caught:
        smol.fim_prompt("def f(", "\n    return x")
    assert (caught.value.status, caught.value.param) == (400, "suffix")


def test_fim_prompt_with_starcoder_style_tokens() -> None:
    adapter = TokenizerAdapter(byte_tokenizer())
    assert adapter.fim_tokens() == (1, 3, 2)  # prefix, suffix, middle
    ids = adapter.fim_prompt("ab", "c")
    assert ids == [1, *adapter.encode_text("ab"), 3, *adapter.encode_text("c"), 2]
    assert adapter.fim_prompt([40, 41], "") == [1, 40, 41, 3, 2]


def test_render_chat_matches_the_template(smol: TokenizerAdapter) -> None:
    ids = smol.render_chat([{"role": "user", "content": "hi"}])
    expected = SMOLLM2_SYSTEM + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert smol.decode(ids, skip_special_tokens=False) == expected
    assert ids[0] == 1  # <|im_start|> is one special token, not text
    assert ids[-3:] == smol.encode_text("<|im_start|>assistant\n")[-3:]


def test_render_chat_normalizes_openai_messages(smol: TokenizerAdapter) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    text = smol.decode(smol.render_chat(messages), skip_special_tokens=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nab<|im_end|>\n"
        "<|im_start|>assistant\n<|im_end|>\n"
        "<|im_start|>tool\n42<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_render_chat_with_tools_leaves_them_to_the_template(smol: TokenizerAdapter) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    plain = smol.render_chat([{"role": "user", "content": "hi"}])
    assert smol.render_chat([{"role": "user", "content": "hi"}], tools, "auto") == plain


def test_render_chat_errors_name_messages(smol: TokenizerAdapter) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    for messages in ([{"role": "user", "content": [image]}], [{"content": "no role"}]):
        with pytest.raises(UpstreamError) as caught:
            smol.render_chat(messages)
        assert (caught.value.status, caught.value.param) == (400, "messages")


def test_detokenizer_from_adapter(smol: TokenizerAdapter) -> None:
    prompt = smol.encode_text("Q:")
    ids = smol.encode_text(" café 😀")
    detokenizer = smol.detokenizer(prompt)
    text = "".join(detokenizer.feed(token) for token in ids) + detokenizer.flush()
    assert text == " café 😀" == smol.decode(ids)
