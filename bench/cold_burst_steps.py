"""Engine steps and forward passes, not seconds: what a cold burst of prompts and a prompt
held whole in the prefix store cost the engine, on whichever tree `providers` comes from
(PYTHONPATH=<worktree> measures another commit with this same script).

Loads SmolLM2-135M-Instruct (float32, CPU) once, and on engines of the default config
(`max_context` 2,048, `prefill_chunk_tokens` 256, the prefix cache on, `max_slots` 16 and
32) submits, one `submit` after another as `engine_runs.engine_streams` does, B copies of
the 39-token chat prompt local_bench.py sends, with the prefix index empty, greedy, 4 new
tokens each. It prints the prefill passes and prompt tokens they computed, and the engine
steps from the first submit to each stream's first token (min / max). Then a prompt of
exactly 48 tokens (three blocks) twice: the prompt tokens the second computes. Counts are
deterministic up to when the engine thread wakes between submits (it reports the
distinct first-token steps, so a burst split by a wake-up shows).

    python bench/cold_burst_steps.py
"""

from __future__ import annotations

import threading
from typing import Any

MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


class _Sink:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.steps: list[int] = []
        self.finished = threading.Event()

    def on_token(self, sampled: Any) -> str | None:
        self.steps.append(self.engine.steps)
        return None

    def on_finish(self, reason: str) -> None:
        self.finished.set()


def _engine(loaded: Any, slots: int) -> tuple[Any, Any]:
    from providers.local.engine import Engine
    from providers.local.settings import LocalModelSettings
    from providers.torch.runner import TorchRunner
    from providers.torch.sampling import TorchSampler

    defaults = LocalModelSettings()
    runner = TorchRunner.from_loaded(
        loaded,
        max_slots=slots,
        prefix_tokens=defaults.prefix_cache.max_tokens,
        block_tokens=defaults.prefix_cache.block_tokens,
    )
    engine = Engine(
        runner, TorchSampler("cpu"), "steps", prefill_chunk_tokens=defaults.prefill_chunk_tokens
    )
    return runner, engine


def _run(engine: Any, prompts: list[list[int]], tokens: int) -> list[_Sink]:
    from providers.local.job import Job
    from providers.local.runner import RowSampling

    sinks = [_Sink(engine) for _ in prompts]
    jobs = [
        Job(list(prompt), [RowSampling(temperature=0)], [sink], tokens)
        for prompt, sink in zip(prompts, sinks, strict=True)
    ]
    for job in jobs:
        engine.submit(job)
    for sink in sinks:
        if not sink.finished.wait(600):
            raise RuntimeError("a stream did not finish")
    return sinks


def main() -> None:
    import providers.local.engine as engine_module
    from providers.local.tokenizer import TokenizerAdapter
    from providers.torch.loading import load_causal_lm

    print(f"providers from {engine_module.__file__}")
    loaded = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype="float32")
    prompt = TokenizerAdapter(loaded.tokenizer).render_chat(MESSAGES)
    for slots, burst in ((16, 16), (32, 32)):
        runner, engine = _engine(loaded, slots)
        try:
            start = engine.steps
            sinks = _run(engine, [prompt] * burst, tokens=4)
            firsts = sorted({sink.steps[0] - start for sink in sinks})
            print(
                f"{burst} x {len(prompt)}-token prompts, {slots} slots, cold: "
                f"{runner.counts.prefills} prefill passes, {runner.counts.prefill_tokens} "
                f"prompt tokens computed; first tokens at steps {firsts} after submitting"
            )
        finally:
            engine.close()
    runner, engine = _engine(loaded, 16)
    try:
        whole = (prompt * 2)[:48]
        _run(engine, [whole], tokens=4)
        before = runner.counts.prefill_tokens
        _run(engine, [whole], tokens=4)
        print(
            f"a 48-token prompt (3 blocks of 16) held whole: the second time "
            f"{runner.counts.prefill_tokens - before} prompt tokens computed"
        )
    finally:
        engine.close()


if __name__ == "__main__":
    main()
