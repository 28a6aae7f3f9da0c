"""A batch's `usage`: the tokens of its answered lines, summed from their own `usage` as
the output file is written, in the Batch object's shape (`input_tokens`,
`output_tokens`, `total_tokens` and their details)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class BatchUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, output_line: bytes) -> None:
        """Count one output line's `response.body.usage` (chat, completions, embeddings)."""
        response = orjson.loads(output_line).get("response") or {}
        usage = (response.get("body") or {}).get("usage")
        if not isinstance(usage, dict):
            return
        # Chat and completions say prompt/completion; a Response (a /v1/responses line)
        # says input/output.
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        self.input_tokens += prompt
        self.output_tokens += completion
        self.total_tokens += _int(usage.get("total_tokens")) or prompt + completion
        inputs = usage.get("prompt_tokens_details", usage.get("input_tokens_details")) or {}
        self.cached_tokens += _int(inputs.get("cached_tokens"))
        outputs = usage.get("completion_tokens_details", usage.get("output_tokens_details")) or {}
        self.reasoning_tokens += _int(outputs.get("reasoning_tokens"))

    def public(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
