"""The seam where a continued stream joins what the client already has
(policies/stream_seam.py): held-back whitespace, stop strings across it, and the record of
what each choice sent."""

from __future__ import annotations

from policies.stream_seam import ChoiceSent, Seam, record
from providers.types import Endpoint


def joined(seam: Seam, pieces: list[str]) -> tuple[str, bool]:
    out, stopped = "", False
    for piece in pieces:
        text, stopped = seam.push(piece)
        out += text
        if stopped:
            return out, True
    return out + seam.finish(), stopped


def test_whitespace_the_continuation_repeats_is_not_sent_twice() -> None:
    assert joined(Seam("Hello ", " ", ()), [" world"]) == ("world", False)


def test_whitespace_the_continuation_does_not_repeat_is_kept() -> None:
    # The client already has "Hello "; the continuation's "world" joins it as is.
    assert joined(Seam("Hello ", " ", ()), ["world"]) == ("world", False)


def test_held_whitespace_is_matched_across_pieces_and_only_as_far_as_it_agrees() -> None:
    assert joined(Seam("a\n\n", "\n\n", ()), ["\n", "\nb"]) == ("b", False)
    assert joined(Seam("a\n\n", "\n\n", ()), ["\n", " b"]) == (" b", False)
    assert joined(Seam("a ", " ", ()), [" ", " b"]) == (" b", False)  # once only


def test_a_stop_string_split_across_the_seam_ends_the_choice() -> None:
    assert joined(Seam("one two EN", "", ["END"]), ["D three"]) == ("", True)
    assert joined(Seam("one two E", "", ["END"]), ["N", "D three"]) == ("", True)


def test_text_held_at_the_seam_is_released_once_no_stop_can_straddle_it() -> None:
    seam = Seam("one two EN", "", ["END"])
    assert seam.push("") == ("", False)
    assert joined(seam, ["Dx"]) == ("", True)  # "END" then "x": stopped, nothing sent
    assert joined(Seam("one EN", "", ["END"]), ["E", "R"]) == ("ER", False)
    assert joined(Seam("one EN", "", ["END"]), ["E"]) == ("E", False)  # released at the end


def test_a_stop_string_after_held_whitespace_is_matched_on_the_joined_text() -> None:
    # The client has "a\n"; the prefill was "a"; "\n\n" re-emits one "\n" and adds one.
    assert joined(Seam("a\n", "\n", ["\n\n"]), ["\n\nb"]) == ("", True)


def test_record_keeps_each_choice_and_marks_tool_calls() -> None:
    sent: dict[int, ChoiceSent] = {}
    record(
        sent,
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        Endpoint.CHAT,
    )
    record(sent, {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, Endpoint.CHAT)
    call = {"index": 0, "function": {"name": "f", "arguments": ""}}
    record(sent, {"choices": [{"index": 1, "delta": {"tool_calls": [call]}}]}, Endpoint.CHAT)
    record(sent, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, Endpoint.CHAT)
    assert (sent[0].text, sent[0].tokens, sent[0].finished, sent[0].other) == ("Hi", 1, True, None)
    assert sent[1].other == "a tool call"


def test_record_counts_tokens_from_logprobs_when_there_are_some() -> None:
    sent: dict[int, ChoiceSent] = {}
    logprobs = {"tokens": ["a", "b", "c"], "token_logprobs": [0, 0, 0]}
    record(
        sent, {"choices": [{"index": 0, "text": "abc", "logprobs": logprobs}]}, Endpoint.COMPLETIONS
    )
    assert (sent[0].text, sent[0].tokens) == ("abc", 3)
