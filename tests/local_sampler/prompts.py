"""The prompts the local sampler tests send."""

from __future__ import annotations

from openai.types.chat import ChatCompletionMessageParam

STORY = "Once upon a time, in a small village,"
RECIPE = "To bake bread, you first"
FRANCE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]
