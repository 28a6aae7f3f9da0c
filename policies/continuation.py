"""Continuing a stream that broke after content reached the client (README, "What happens
to a request", step 4): the client keeps one stream, with no text repeated or missing.

A `Rescue` follows one committed stream. It records what each choice has sent; when the
stream fails, it decides whether the answer can be continued and builds one continuation
request per unfinished choice ("legs", n = 1 each, run one after the other): for
completions the prompt plus the text already sent (any deployment that serves completions
natively); for chat the partial answer as a final assistant message, on deployments that
declare `prefill` (vLLM's `continue_final_message`, Anthropic's assistant prefill, the
local samplers). No instruction is ever added to the conversation. It then joins each
leg's chunks to the stream (policies/stream_seam.py), and ends it with one usage chunk
summed over every attempt.

Where: on the deployment that broke when its failure is retryable (policies/retry.py),
then on the plan's other deployments, leaving out those that already failed in this
request. Not continued, the client getting the original failure in-band as before: a
choice that sent a tool call (or a refusal, or reasoning) or a structured-output answer,
an `echo` or token-id completions prompt, a final failure, a plan with no deployment able
to continue; and with several choices, none unless every unfinished one can be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from policies.plan import DeploymentPlan, Target
from policies.retry import Attempt, Decision, classify
from policies.rules import CHARS_PER_TOKEN, estimate_prompt_tokens
from policies.stream_seam import ChoiceSent, Seam, record, stop_strings, text_slot
from providers.capabilities import Capabilities
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject

MAX_RESCUES = 3  # failures one stream may be rescued from: a backend failing every time ends it
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for `/v1/completions`
# vLLM's way (also the local samplers') to continue the final assistant message.
PREFILL_KEYS: JSONObject = {"continue_final_message": True, "add_generation_prompt": False}


def can_continue(endpoint: Endpoint, capabilities: Capabilities) -> bool:
    """Whether a deployment can continue a partial answer on `endpoint`."""
    if endpoint is Endpoint.COMPLETIONS:
        return capabilities.completions  # a prompt is continued by any completions backend
    return endpoint is Endpoint.CHAT and capabilities.chat and capabilities.prefill


@dataclass(slots=True)
class Leg:
    """One stream feeding the client: the original (`index` None: its choices as they
    are) or a continuation of one choice (its index 0 is the client's `index`)."""

    body: JSONObject
    index: int | None = None
    seam: Seam | None = None
    plans: tuple[DeploymentPlan, ...] = ()
    usage: JSONObject | None = None
    chars: int = 0
    stopped: bool = False  # its choice ended at a stop string across the seam


@dataclass(slots=True)
class Rescue:
    """One committed stream's continuation state (module docstring)."""

    plan: DeploymentPlan
    endpoint: Endpoint
    body: Mapping[str, Any]
    capabilities: Callable[[Target], Capabilities]
    sent: dict[int, ChoiceSent] = field(default_factory=dict)
    leg: Leg = field(init=False)
    done: list[Leg] = field(default_factory=list)
    queued: list[Leg] = field(default_factory=list)
    backlog: list[JSONObject] = field(default_factory=list)  # chunks to send before the next leg
    head: JSONObject = field(default_factory=dict)
    continued: int = 0
    rescues: int = 0
    original: UpstreamError | None = None  # the first failure, as the client may see it

    def __post_init__(self) -> None:
        self.leg = Leg(dict(self.body))

    def relayed(self, chunk: JSONObject) -> JSONObject | None:
        """`chunk` of the current leg as the client gets it (None: nothing of it)."""
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.leg.usage = usage  # a continued stream's usage is summed at its end
        if self.leg.index is not None:
            joined = self._joined(chunk)
            if joined is None:
                return None
            chunk = joined
        self.leg.chars += _chars(chunk, self.endpoint)
        record(self.sent, chunk, self.endpoint)
        return chunk

    def broke(self, error: UpstreamError, public: UpstreamError, target: Target | None,
              attempts: list[Attempt]) -> str | None:  # fmt: skip
        """The current leg failed with `error` (`public`: as the client may see it) on
        `target`. Queues the continuation legs; or says why the stream cannot be continued."""
        if self.original is None:
            self.original = public
        self._close_leg()
        self.rescues += 1
        if self.rescues > MAX_RESCUES:
            return f"failed {MAX_RESCUES} times"
        reason = self._refusal(error)
        if reason is not None:
            return reason
        plans = self._plans(classify(error), target, attempts)
        if not plans:
            return "no other deployment can continue it"
        unfinished = self._unfinished()
        if not unfinished:  # only its end was missing: still a broken stream (README)
            return "every choice had finished"
        legs = [self._leg_for(index, plans) for index in unfinished]
        self.queued[:0] = [leg for leg in legs if leg is not None]
        return None

    @property
    def leg_stopped(self) -> bool:
        """The current continuation's choice ended at a stop string across the seam."""
        return self.leg.stopped

    def next_leg(self) -> Leg | None:
        """The next continuation to open (it becomes the current leg), if any."""
        if not self.queued:
            return None
        self.leg = self.queued.pop(0)
        self.continued += 1
        return self.leg

    def ended(self) -> None:
        """The current leg's stream ended cleanly."""
        if self.leg.seam is not None and self.leg.index is not None:
            rest = self.leg.seam.finish()
            if rest:  # held back at the seam, and the leg sent no finish chunk for it
                self.backlog.append(self._text_chunk(self.leg.index, rest, None))
        self._close_leg()

    def drain(self) -> list[JSONObject]:
        """Chunks to send before the next leg: choices ended at the seam or out of tokens."""
        out, self.backlog = self.backlog, []
        return out

    def closing(self) -> JSONObject:
        """The chunk that ends a continued stream: its usage, summed over every attempt."""
        self._close_leg()
        total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        estimated = False
        for leg in self.done:
            usage = leg.usage
            if usage is None:
                usage, estimated = self._estimate(leg), True
            for key in total:
                value = usage.get(key)
                total[key] += value if isinstance(value, int) else 0
        total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]
        note: JSONObject = {"continued": self.continued}
        if estimated:
            note["usage_estimated"] = True
        return {**self.head, "choices": [], "usage": total, "turnout": note}

    def _close_leg(self) -> None:
        if self.leg not in self.done:
            self.done.append(self.leg)

    def _refusal(self, error: UpstreamError) -> str | None:
        """Why nothing of this stream can be continued, if so."""
        if classify(error) not in (Decision.RETRY, Decision.NEXT):
            return "the failure is final"
        body = self.body
        response_format = body.get("response_format")
        if isinstance(response_format, Mapping) and response_format.get("type") != "text":
            return "a structured-output answer"
        if self.endpoint is Endpoint.COMPLETIONS:
            if body.get("echo"):
                return "an echoed prompt"
            if any(not isinstance(p, str) for p in _prompts(body)):
                return "a token-id prompt"
        for index in self._unfinished():
            other = self.sent.get(index, ChoiceSent()).other
            if other is not None:
                return f"choice {index} sent {other}"
        return None

    def _unfinished(self) -> list[int]:
        """The client's choices this failure left unfinished."""
        if self.leg.index is not None:
            state = self.sent.get(self.leg.index)
            return [] if state is not None and state.finished else [self.leg.index]
        count = _choice_count(self.endpoint, self.body)
        return [i for i in range(count) if not self.sent.get(i, ChoiceSent()).finished]

    def _plans(
        self, decision: Decision, broken: Target | None, attempts: list[Attempt]
    ) -> tuple[DeploymentPlan, ...]:
        failed = {a.deployment for a in attempts if a.outcome != "ok"}
        if broken is not None:
            failed.add(broken.label)
        able = [
            t
            for t in self.plan.targets
            if t.label not in failed and can_continue(self.endpoint, self.capabilities(t))
        ]
        plans = []
        if (
            decision is Decision.RETRY
            and broken is not None
            and can_continue(self.endpoint, self.capabilities(broken))
        ):
            plans.append(replace(self.plan, targets=(broken,), context_window_targets=()))
        if able:
            plans.append(replace(self.plan, targets=tuple(able), context_window_targets=()))
        return tuple(plans)

    def _leg_for(self, index: int, plans: tuple[DeploymentPlan, ...]) -> Leg | None:
        """The continuation of choice `index`; None when it has no tokens left (it then
        ends here with `finish_reason: length`)."""
        state = self.sent.get(index, ChoiceSent())
        sent = state.text
        body = {k: v for k, v in self.body.items() if k not in ("n", "best_of", "echo")}
        left = _tokens_left(self.endpoint, body, state.tokens)
        if left is not None and left <= 0:
            self.backlog.append(self._text_chunk(index, "", "length"))
            return None
        if left is not None:
            body["max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"] = (
                left
            )
        held = ""
        if self.endpoint is Endpoint.COMPLETIONS:
            prompts = _prompts(self.body)
            body["prompt"] = str(prompts[index // _n(self.body)]) + sent
        elif sent:
            prefill = sent.rstrip()
            held = sent[len(prefill) :]
            messages = list(self.body.get("messages") or ())
            body["messages"] = [*messages, {"role": "assistant", "content": prefill}]
            body.update(PREFILL_KEYS)
        seam = Seam(sent, held, stop_strings(self.body))
        return Leg(body, index=index, seam=seam, plans=plans)

    def _joined(self, chunk: JSONObject) -> JSONObject | None:
        """A continuation leg's chunk as part of the client's stream: its choice given the
        client's index, the stream's id, the role not repeated, the seam applied."""
        leg = self.leg
        assert leg.index is not None
        assert leg.seam is not None
        choices = []
        for raw in chunk.get("choices") or ():
            choice = dict(raw)
            if self.endpoint is Endpoint.CHAT:
                choice["delta"] = {
                    k: v for k, v in (choice.get("delta") or {}).items() if k != "role"
                }
            holder, key = text_slot(choice, self.endpoint)
            text, stopped = leg.seam.push(holder.get(key) or "")
            if choice.get("finish_reason") and not stopped:
                text += leg.seam.finish()
            if stopped:
                choice["finish_reason"], leg.stopped = "stop", True
            holder[key] = text
            if text or choice.get("finish_reason") or choice.get("logprobs"):
                choices.append({**choice, "index": leg.index})
        if not choices:
            return None
        joined = {**chunk, **{k: v for k, v in self.head.items() if v is not None}}
        joined.pop("usage", None)
        joined["choices"] = choices
        return joined

    def _text_chunk(self, index: int, text: str, finish: str | None) -> JSONObject:
        choice: JSONObject = {"index": index, "finish_reason": finish, "logprobs": None}
        if self.endpoint is Endpoint.CHAT:
            choice["delta"] = {"content": text} if text else {}
        else:
            choice["text"] = text
        chunk = {**self.head, "choices": [choice]}
        record(self.sent, chunk, self.endpoint)
        return chunk

    def _estimate(self, leg: Leg) -> JSONObject:
        prompt = estimate_prompt_tokens(leg.body)
        completion = (leg.chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
        return {"prompt_tokens": prompt, "completion_tokens": completion}


def _chars(chunk: Mapping[str, Any], endpoint: Endpoint) -> int:
    """Characters of text a chunk gives the client (to estimate a leg's usage with)."""
    total = 0
    for choice in chunk.get("choices") or ():
        holder = choice.get("delta") if endpoint is Endpoint.CHAT else choice
        text = holder.get("content" if endpoint is Endpoint.CHAT else "text") if holder else None
        total += len(text) if isinstance(text, str) else 0
    return total


def _n(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def _prompts(body: Mapping[str, Any]) -> list[Any]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not all(isinstance(t, int) for t in prompt):
        return list(prompt)
    return [prompt]


def _choice_count(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    prompts = len(_prompts(body)) if endpoint is Endpoint.COMPLETIONS else 1
    return _n(body) * prompts


def _tokens_left(endpoint: Endpoint, body: Mapping[str, Any], used: int) -> int | None:
    """The continuation's token limit: what the request allowed less what was sent."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is None and endpoint is Endpoint.COMPLETIONS:
        limit = COMPLETIONS_DEFAULT_MAX_TOKENS
    return None if not isinstance(limit, int) else limit - used
