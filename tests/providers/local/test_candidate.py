"""CandidateOutput: what a candidate's text, score and logprobs are when a stop string cuts it."""

from __future__ import annotations

from providers.local.candidate import CandidateOutput, Event, Finished
from providers.local.runner import Sampled
from providers.local.tokenizer import TokenizerAdapter
from tests.local_tokenizer import smollm2_tokenizer


def _feed(text: str, stops: tuple[str, ...], logprob_of: dict[int, float]) -> CandidateOutput:
    adapter = TokenizerAdapter(smollm2_tokenizer())
    events: list[Event] = []
    output = CandidateOutput(0, adapter, [], stops, True, events.append)
    for token in adapter.encode_text(text):
        if output.on_token(Sampled(token, logprob_of.get(token, -1.0))) is not None:
            break
    output.on_finish("stop")
    assert isinstance(events[-1], Finished)
    return output


def test_best_of_score_counts_only_the_tokens_returned() -> None:
    adapter = TokenizerAdapter(smollm2_tokenizer())
    cut = adapter.encode_text(" STOP")  # every token of the stop string scores very low
    output = _feed("alpha beta gamma STOP delta", (" STOP",), dict.fromkeys(cut, -50.0))
    assert output.text == "alpha beta gamma"
    assert output.mean_logprob == -1.0  # the stop string's tokens are not in the answer
    assert output.logprobs is not None
    assert len(output.logprobs.entries) == len(adapter.encode_text("alpha beta gamma"))


def test_without_a_stop_every_token_counts() -> None:
    output = _feed("alpha beta", (), {})
    assert output.text == "alpha beta"
    assert output.mean_logprob == -1.0
