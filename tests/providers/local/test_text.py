"""Incremental detokenization and stop matching, on SmolLM2's tokenizer and two tiny ones."""

from __future__ import annotations

import random
from typing import Any

import pytest

from providers.local.text import IncrementalDetokenizer, StopFilter, StopMatcher
from tests.local_tokenizer import smollm2_tokenizer
from tests.providers.local.tiny_tokenizers import byte_tokenizer, sentencepiece_tokenizer

SAMPLES = (
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces and\n\nnewlines\ttabs  ",
    "café naïve résumé Ångström façade",
    "日本語のテキストと中文文本",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "mixed: Привет, мир! γειά σου κόσμε — ‘quotes’ … ∑∫√",  # noqa: RUF001
    "code: def f(x):\n    return x ** 2  # ok\n",
    "😀",
    "a日b😀c",
    "",
)


def _tokenizers() -> list[Any]:
    return [smollm2_tokenizer(), sentencepiece_tokenizer(), byte_tokenizer()]


def _stream(tokenizer: Any, ids: list[int], prefix: list[int] | None = None) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, prefix or [])
    pieces = [detokenizer.feed(token) for token in ids]
    pieces.append(detokenizer.flush())
    return pieces


@pytest.mark.parametrize("family", ["smollm2", "sentencepiece", "byte"])
def test_token_by_token_equals_full_decode(family: str) -> None:
    tokenizer = dict(zip(["smollm2", "sentencepiece", "byte"], _tokenizers(), strict=True))[family]
    for text in SAMPLES:
        ids = tokenizer.encode(text, add_special_tokens=False)
        pieces = _stream(tokenizer, ids)
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
        assert not any("\ufffd" in piece for piece in pieces), (text, pieces)


@pytest.mark.parametrize("family", ["smollm2", "sentencepiece", "byte"])
def test_continuation_after_a_prompt_keeps_leading_spaces(family: str) -> None:
    tokenizer = dict(zip(["smollm2", "sentencepiece", "byte"], _tokenizers(), strict=True))[family]
    prompt = tokenizer.encode("Say hello", add_special_tokens=False)
    for text in SAMPLES:
        completion = tokenizer.encode(" " + text, add_special_tokens=False)
        full = tokenizer.decode(prompt + completion, skip_special_tokens=True)
        head = tokenizer.decode(prompt, skip_special_tokens=True)
        assert "".join(_stream(tokenizer, completion, prompt)) == full[len(head) :]


def test_sentencepiece_first_token_loses_its_space_like_decode() -> None:
    tokenizer = sentencepiece_tokenizer()
    ids = tokenizer.encode("Hello world", add_special_tokens=False)
    assert "".join(_stream(tokenizer, ids)) == "Hello world"
    bos = tokenizer.encode("Hello world")  # <s> first: skipped, as decode skips it
    assert "".join(_stream(tokenizer, bos)) == "Hello world"


def test_holds_partial_characters_until_complete() -> None:
    tokenizer = byte_tokenizer()
    ids = tokenizer.encode("😀!", add_special_tokens=False)
    assert len(ids) == 5  # four bytes of the emoji, then "!"
    assert _stream(tokenizer, ids) == ["", "", "", "😀", "!", ""]


def test_flush_emits_an_unfinished_character_as_decode_would() -> None:
    tokenizer = byte_tokenizer()
    ids = tokenizer.encode("a😀", add_special_tokens=False)[:-1]  # cut the emoji short
    pieces = _stream(tokenizer, ids)
    assert pieces[-1] == "\ufffd"
    assert "".join(pieces) == tokenizer.decode(ids)


def test_invalid_bytes_do_not_grow_the_window() -> None:
    tokenizer = _RecordingDecoder(byte_tokenizer())
    continuation = tokenizer.encode("\u00e9", add_special_tokens=False)[1]  # the byte 0xA9
    detokenizer = IncrementalDetokenizer(tokenizer)
    lead = tokenizer.encode("日", add_special_tokens=False)[0]  # 0xE6: needs two more bytes
    text = detokenizer.feed(lead)
    for _ in range(50):
        text += detokenizer.feed(continuation)  # lone continuation bytes: never valid
    text += detokenizer.flush()
    assert max(tokenizer.lengths) <= 10
    assert text.count("\ufffd") >= 1


def test_skipped_special_tokens_emit_nothing() -> None:
    tokenizer = smollm2_tokenizer()
    ids = [*tokenizer.encode("Hi", add_special_tokens=False), 2, 0]
    assert "".join(_stream(tokenizer, ids)) == "Hi"
    keep = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    assert "".join(keep.feed(token) for token in ids) == "Hi<|im_end|><|endoftext|>"


def test_decode_window_stays_small_over_long_output() -> None:
    tokenizer = _RecordingDecoder(smollm2_tokenizer())
    ids = tokenizer.encode("日本語 😀 text " * 200, add_special_tokens=False)
    prompt = tokenizer.encode("A long prompt " * 50, add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer, prompt)
    text = "".join(detokenizer.feed(token) for token in ids) + detokenizer.flush()
    assert text == "日本語 😀 text " * 200
    assert max(tokenizer.lengths) <= 8


class _RecordingDecoder:
    """A tokenizer wrapper that records how many ids each decode call got."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.lengths: list[int] = []

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(text, **kwargs))

    def decode(self, token_ids: list[int], **kwargs: Any) -> Any:
        self.lengths.append(len(token_ids))
        return self.tokenizer.decode(token_ids, **kwargs)


# Stop strings


def _push_all(stops: list[str], deltas: list[str]) -> tuple[list[str], StopFilter]:
    stop_filter = StopFilter(StopMatcher(stops))
    sent = [stop_filter.push(delta) for delta in deltas]
    sent.append(stop_filter.finish())
    return sent, stop_filter


def test_stop_spanning_tokens_is_found() -> None:
    sent, stop_filter = _push_all(["o w"], ["Hel", "lo", " wor", "ld"])
    assert stop_filter.stopped
    assert stop_filter.stop == "o w"
    assert stop_filter.text == "Hell" == "".join(sent)


def test_earliest_match_wins_over_stop_order() -> None:
    matcher = StopMatcher(["world", "lo"])
    assert matcher.check("hello world", 11) == ("hel", True)
    match = matcher.find("hello world", 11)
    assert match is not None
    assert (match.start, match.stop) == (3, "lo")


def test_overlapping_stops() -> None:
    assert StopMatcher(["abc", "bcd"]).check("xabcd", 5) == ("x", True)
    assert StopMatcher(["bcd", "abc"]).check("xabcd", 5) == ("x", True)
    # Checked per token, the stop that completes first ends generation.
    _, stop_filter = _push_all(["abcd", "bc"], ["a", "b", "c", "d"])
    assert stop_filter.text == "a"
    assert stop_filter.stop == "bc"


def test_search_starts_only_where_a_new_stop_can_begin() -> None:
    matcher = StopMatcher(["xy"])
    # An old "xy" (before the window) is not searched again; a new one is found.
    assert matcher.find("xy" + "a" * 10, 3) is None
    found = matcher.find("a" * 10 + "xy", 1)
    assert found is not None
    assert found.start == 10


def test_streaming_holds_back_only_a_possible_stop_start() -> None:
    stop_filter = StopFilter(StopMatcher(["STOP", "\n\n"]))
    assert stop_filter.push("hello ST") == "hello "
    assert stop_filter.push("x") == "STx"
    assert stop_filter.push("y\n") == "y"
    assert stop_filter.push("S") == "\n"
    assert stop_filter.push("TO") == ""
    assert stop_filter.push("P and more") == ""
    assert stop_filter.stopped
    assert stop_filter.text == "hello STxy\n"
    assert stop_filter.finish() == ""


def test_safe_prefix_length() -> None:
    matcher = StopMatcher(["</s>", "END"])
    assert matcher.safe_prefix_length("abc") == 3
    assert matcher.safe_prefix_length("abc</") == 3
    assert matcher.safe_prefix_length("abcE") == 3
    assert matcher.safe_prefix_length("abcEN") == 3
    assert matcher.safe_prefix_length("abcENx") == 6
    assert StopMatcher([]).safe_prefix_length("abc</") == 5


def test_no_stops_sends_everything_at_once() -> None:
    stop_filter = StopFilter(StopMatcher(["", ""]))
    assert stop_filter.push("abc") == "abc"
    assert stop_filter.finish() == ""
    assert not stop_filter.stopped


def _oracle(text: str, cuts: list[int], stops: list[str]) -> str:
    """Check the whole text so far after every token, as generation does."""
    for end in [*cuts, len(text)]:
        starts = [text[:end].find(stop) for stop in stops if stop in text[:end]]
        if starts:
            return text[: min(starts)]
    return text


def test_streaming_equals_non_streaming_for_random_splits() -> None:
    rng = random.Random(1234)
    alphabet = "ab c\n"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        stops = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(0, 3))
        ]
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, max(0, len(text) - 1))))
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        sent, stop_filter = _push_all(stops, deltas)
        expected = _oracle(text, cuts, stops)
        assert stop_filter.text == expected, (text, stops, deltas)
        assert "".join(sent) == expected, (text, stops, deltas)
        # Nothing that could still begin a stop was sent early.
        for index in range(len(sent) - 1):
            sent_so_far = "".join(sent[: index + 1])
            assert sent_so_far == expected[: len(sent_so_far)]


def test_detokenized_stream_with_stops_equals_non_streaming_text() -> None:
    tokenizer = smollm2_tokenizer()
    text = "The answer is 42.\n\nQ: 日本 😀 what next?\nA: café"
    ids = tokenizer.encode(text, add_special_tokens=False)
    for stops in (["\n\n"], ["日本 😀"], ["😀"], ["xyz"], ["?\nA", "42"], ["é"]):
        detokenizer = IncrementalDetokenizer(tokenizer)
        stop_filter = StopFilter(StopMatcher(stops))
        sent: list[str] = []
        for token in ids:
            sent.append(stop_filter.push(detokenizer.feed(token)))
            if stop_filter.stopped:
                break
        else:
            sent.append(stop_filter.push(detokenizer.flush()))
        sent.append(stop_filter.finish())
        cut = min((text.find(s) for s in stops if s in text), default=len(text))
        assert "".join(sent) == stop_filter.text == text[:cut], stops
