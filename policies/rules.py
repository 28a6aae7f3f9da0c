"""Team rules: the first rule whose conditions all hold decides how a request is routed.

Rules look only at what the client controls: `metadata` tags, `user`, the model name,
headers, and features of the request itself (streaming, tools, estimated prompt size)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.policy_config import Rule, RuleMatch

CHARS_PER_TOKEN = 4  # a cheap, tokenizer-free estimate, used only for routing and limits


@dataclass(slots=True)
class RequestFacts:
    model: str
    user: str | None
    metadata: Mapping[str, Any]
    headers: Mapping[str, str]  # names lower-case
    stream: bool
    has_tools: bool
    body: Mapping[str, Any]
    configured: str | None = None  # the configured model `model` resolved to (an alias's)
    _prompt_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        """Estimated on first use: walking a large prompt is the one costly fact, and only
        a rule with `prompt_tokens_over` needs it."""
        if self._prompt_tokens is None:
            self._prompt_tokens = estimate_prompt_tokens(self.body)
        return self._prompt_tokens

    @classmethod
    def of(
        cls, body: Mapping[str, Any], headers: Mapping[str, str], configured: str | None = None
    ) -> RequestFacts:
        metadata = body.get("metadata")
        return cls(
            model=str(body.get("model", "")),
            user=body.get("user") if isinstance(body.get("user"), str) else None,
            metadata=metadata if isinstance(metadata, Mapping) else {},
            headers=headers,
            stream=body.get("stream") is True,
            has_tools=bool(body.get("tools") or body.get("functions")),
            body=body,
            configured=configured,
        )


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """About how many tokens the prompt is: characters / 4 over every text in it, and the
    length of token-id prompts. An estimate for routing and limits, never for billing."""
    chars = 0
    tokens = 0
    for part in (body.get("prompt"), body.get("messages"), body.get("input")):
        stack: list[Any] = [part]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, int):
                tokens += 1
            elif isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return tokens + (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def first_match(rules: Sequence[Rule], facts: RequestFacts) -> tuple[int, Rule] | None:
    for index, rule in enumerate(rules):
        if matches(rule.when, facts):
            return index, rule
    return None


def matches(when: RuleMatch, facts: RequestFacts) -> bool:
    if when.metadata is not None and any(
        k not in facts.metadata or str(facts.metadata[k]) != v for k, v in when.metadata.items()
    ):
        return False
    if when.user is not None and facts.user not in when.user:
        return False
    # The name asked or the configured model it means: a rule written for a model also
    # holds for its aliases and matched names.
    if (
        when.model is not None
        and facts.model not in when.model
        and facts.configured not in when.model
    ):
        return False
    if when.header is not None and any(
        facts.headers.get(name.lower()) != value for name, value in when.header.items()
    ):
        return False
    if when.stream is not None and facts.stream != when.stream:
        return False
    if when.has_tools is not None and facts.has_tools != when.has_tools:
        return False
    return when.prompt_tokens_over is None or facts.prompt_tokens > when.prompt_tokens_over
