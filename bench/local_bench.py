"""The in-process PyTorch sampler against Hugging Face `generate()`, one model, one run.

Loads SmolLM2-135M-Instruct once (float32, CPU) and runs, interleaved round by round:
1. `model.generate()`, greedy, exactly N new tokens (`min_new_tokens=N` keeps EOS away)
   → tokens/s of one stream: the baseline every ratio is taken against;
2. Turnout's continuous-batching `Engine` on the same weights and prompt (TorchRunner,
   TorchSampler, greedy rows, sinks that ignore EOS so each stream makes exactly N tokens)
   at 1, 4 and 16 concurrent streams, all jobs submitted at once → aggregate tokens/s
   (all tokens / submit-to-last-finish), per-stream tokens/s, time to first token.
Then end to end: one `turnout serve` (the default config) in a subprocess, driven by the
async openai SDK at 1 and 16 concurrent streaming chat requests (temperature 0, max_tokens N,
EOS banned with logit_bias, tokens counted from the usage chunk), interleaved with the bare
engine and `generate()` so the HTTP path's cost is read against them in the same minutes.

    python bench/local_bench.py [--tokens 64] [--rounds 3] [--http-rounds 2] [--threads 0]

Only 127.0.0.1 is ever contacted. Raw figures go to bench/results/local.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
ENGINE_STREAMS = (1, 4, 16)
HTTP_STREAMS = (1, 16)
MAX_SLOTS = 16
MAX_CONTEXT = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Until /health/ready answers 200 (the local models load in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"turnout serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"turnout on port {port} not ready after {timeout:.0f} s")


@contextmanager
def turnout_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`turnout serve` with its embedded default config, logs to a temporary file."""
    with tempfile.TemporaryFile("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# One stream's figures: tokens, seconds from submit to first token and to the end.


def stream_record(tokens: int, start: float, first: float | None, end: float) -> dict[str, Any]:
    seconds = end - start
    return {
        "tokens": tokens,
        "ttft_s": (first - start) if first is not None else None,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }


def run_record(streams: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    total = sum(s["tokens"] for s in streams)
    ttfts = [s["ttft_s"] for s in streams if s["ttft_s"] is not None]
    return {
        "streams": len(streams),
        "tokens": total,
        "wall_s": wall,
        "aggregate_tokens_per_s": total / wall,
        "per_stream_tokens_per_s": statistics.median(s["tokens_per_s"] for s in streams),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_max_s": max(ttfts) if ttfts else None,
        "per_stream": streams,
    }


# 1. Hugging Face generate()


class Bench:
    """The loaded model, the prompt, and one Turnout engine over the same weights."""

    def __init__(self, tokens: int) -> None:
        import torch
        from transformers.generation.streamers import BaseStreamer

        from providers.local.engine import Engine
        from providers.local.tokenizer import TokenizerAdapter
        from providers.torch.loading import load_causal_lm
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        self.torch = torch
        self.streamer_base = BaseStreamer
        self.tokens = tokens
        self.loaded = load_causal_lm(MODEL, device="cpu", dtype="float32")
        self.adapter = TokenizerAdapter(self.loaded.tokenizer)
        self.prompt = self.adapter.render_chat(MESSAGES)  # what the server tokenizes too
        self.input_ids = torch.tensor([self.prompt], dtype=torch.long)
        runner = TorchRunner.from_loaded(self.loaded, max_slots=MAX_SLOTS, max_context=MAX_CONTEXT)
        self.engine = Engine(runner, TorchSampler("cpu"), "bench")
        self.reference: list[int] = []  # generate()'s greedy tokens
        self.mismatches: list[str] = []

    def close(self) -> None:
        self.engine.close()

    def generate(self) -> dict[str, Any]:
        clock = _first_token_clock(self.streamer_base)
        gc.collect()
        start = time.perf_counter()
        model: Any = self.loaded.model
        output = model.generate(
            self.input_ids,
            attention_mask=self.torch.ones_like(self.input_ids),
            max_new_tokens=self.tokens,
            min_new_tokens=self.tokens,  # no early stop: EOS is masked until N tokens
            do_sample=False,
            pad_token_id=self.loaded.tokenizer.pad_token_id,
            streamer=clock,
        )
        end = time.perf_counter()
        new = output[0, len(self.prompt) :].tolist()
        if len(new) != self.tokens:
            raise RuntimeError(f"generate() made {len(new)} tokens, not {self.tokens}")
        self.reference = new
        return run_record([stream_record(len(new), start, clock.first, end)], end - start)

    # 2. Turnout's engine

    def engine_run(self, streams: int) -> dict[str, Any]:
        outputs, record = engine_streams(self.engine, self.prompt, self.tokens, streams)
        for tokens in outputs:
            self._check_greedy(tokens, f"engine x{streams}")
        return record

    def _check_greedy(self, tokens: list[int], where: str) -> None:
        """Greedy tokens must equal generate()'s up to the first EOS (generate() masks EOS
        until N tokens, the engine's sinks ignore it, so they part there)."""
        eos = self.adapter.eos_ids
        for ours, theirs in zip(tokens, self.reference, strict=False):
            if ours != theirs:
                self.mismatches.append(f"{where}: {ours} != {theirs}")
                return
            if ours in eos:
                return


def engine_streams(
    engine: Any, prompt: list[int], tokens: int, streams: int, timeout: float = 900
) -> tuple[list[list[int]], dict[str, Any]]:
    """`streams` greedy jobs of `prompt`, exactly `tokens` new tokens each (EOS ignored), all
    submitted at once to a continuous-batching `Engine` → (each stream's tokens, the run's
    figures). Shared with jax_bench.py."""
    from providers.local.engine import Job
    from providers.local.runner import RowSampling

    done = _Countdown(streams)
    sinks = [_Sink(done) for _ in range(streams)]
    jobs = [Job(prompt, [RowSampling(temperature=0)], [sink], tokens) for sink in sinks]
    gc.collect()
    start = time.perf_counter()
    for job in jobs:
        engine.submit(job)
    if not done.wait(timeout=timeout):
        raise RuntimeError(f"{streams} streams did not finish in {timeout:.0f} s")
    end = max(sink.end for sink in sinks)
    for sink in sinks:
        if sink.reason != "length" or len(sink.tokens) != tokens:
            raise RuntimeError(f"a stream ended {sink.reason!r} after {len(sink.tokens)}")
    records = [stream_record(len(s.tokens), start, s.first, s.end) for s in sinks]
    return [sink.tokens for sink in sinks], run_record(records, end - start)


def _first_token_clock(base: type) -> Any:
    class FirstTokenClock(base):  # type: ignore[misc]
        """generate()'s streamer: put() gets the prompt first, then each new token."""

        def __init__(self) -> None:
            self.calls = 0
            self.first: float | None = None

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    return FirstTokenClock()


class _Countdown:
    """Set once `count` streams have finished; the sinks never block the engine thread."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._event = threading.Event()

    def finished_one(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class _Sink:
    """Takes every token (EOS too, never stops early); times the first and the last."""

    def __init__(self, done: _Countdown) -> None:
        self.done = done
        self.tokens: list[int] = []
        self.first: float | None = None
        self.end = 0.0
        self.reason = ""

    def on_token(self, sampled: Any) -> str | None:
        if self.first is None:
            self.first = time.perf_counter()
        self.tokens.append(sampled.token)
        return None

    def on_finish(self, reason: str) -> None:
        self.end = time.perf_counter()
        self.reason = reason
        self.done.finished_one()


# 3. End to end through the HTTP server


async def http_run(client: Any, streams: int, tokens: int, ban: dict[str, int]) -> dict[str, Any]:
    async def one(start: float) -> dict[str, Any]:
        first: float | None = None
        counted = 0
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=tokens,
            temperature=0,
            logit_bias=ban,  # EOS banned: every stream makes exactly N tokens
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage is not None:
                counted = chunk.usage.completion_tokens
        end = time.perf_counter()
        if counted != tokens:
            raise RuntimeError(f"an HTTP stream made {counted} tokens, not {tokens}")
        return stream_record(counted, start, first, end)

    gc.collect()
    start = time.perf_counter()
    records = await asyncio.gather(*(one(start) for _ in range(streams)))
    end = max(start + r["seconds"] for r in records)
    return run_record(list(records), end - start)


def progress(label: str, result: dict[str, Any]) -> None:
    print(
        f"{label}: {result['aggregate_tokens_per_s']:6.1f} tok/s aggregate, "
        f"{result['per_stream_tokens_per_s']:5.1f} per stream, "
        f"TTFT p50 {result['ttft_p50_s'] * 1000:5.0f} ms, wall {result['wall_s']:5.1f} s",
        flush=True,
    )


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream (N)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved in-process rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads here and in the server (OMP_NUM_THREADS); 0: torch's own",
    )
    parser.add_argument("--http-rounds", type=int, default=2, help="rounds through HTTP")
    parser.add_argument("--no-http", action="store_true", help="skip the `turnout serve` part")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "local.json")
    args = parser.parse_args()
    if args.threads:
        # Before torch is imported (here and in the server, which inherits the environment).
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    started = time.perf_counter()
    bench = Bench(args.tokens)
    if len(bench.prompt) + args.tokens > MAX_CONTEXT:
        parser.error(f"--tokens {args.tokens} does not fit max_context {MAX_CONTEXT}")
    torch = bench.torch
    environment = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "prompt_tokens": len(bench.prompt),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "max_slots": MAX_SLOTS,
        "max_context": MAX_CONTEXT,
    }
    print(f"# {json.dumps(environment)}")
    print("warm-up ...", flush=True)
    bench.generate()
    for streams in ENGINE_STREAMS:
        bench.engine_run(streams)

    variants = ["generate", *(f"engine_x{n}" for n in ENGINE_STREAMS)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        # Rotate the order each round so drift on the shared machine hits every variant.
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for name in order:
            if name == "generate":
                result = bench.generate()
            else:
                result = bench.engine_run(int(name.removeprefix("engine_x")))
            runs[name].append(result)
            progress(f"round {round_index} {name:>15}", result)

    http_runs: dict[str, list[dict[str, Any]]] = {}
    if not args.no_http:
        http_runs = http_phase(bench, args.tokens, args.http_rounds)

    bench.close()
    results = {
        "environment": environment,
        "rounds": runs,
        "http_phase": http_runs,
        "greedy_mismatches": bench.mismatches,
        "total_seconds": time.perf_counter() - started,
    }
    report(runs, http_runs, bench.mismatches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwhole run {results['total_seconds']:.0f} s; raw results: {args.out}")


def http_phase(bench: Bench, tokens: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Interleaved, `rounds` times: generate(), bare engine and HTTP at 1 and 16 streams."""
    from openai import AsyncOpenAI

    port = free_port()
    ban = {str(token): -100 for token in sorted(bench.adapter.eos_ids)}
    runs: dict[str, list[dict[str, Any]]] = {}
    print(f"starting turnout serve on 127.0.0.1:{port} ...", flush=True)
    with turnout_server(port), asyncio.Runner() as loop:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        loop.run(http_run(client, 1, tokens, ban))  # warm-up: connection, first request
        loop.run(http_run(client, 4, tokens, ban))
        steps: list[tuple[str, Any]] = [("generate", bench.generate)]
        for streams in HTTP_STREAMS:
            steps.append((f"engine_x{streams}", lambda n=streams: bench.engine_run(n)))
            steps.append(
                (f"http_x{streams}", lambda n=streams: loop.run(http_run(client, n, tokens, ban)))
            )
        for round_index in range(rounds):
            for name, step in steps if round_index % 2 == 0 else reversed(steps):
                result = step()
                runs.setdefault(name, []).append(result)
                progress(f"http round {round_index} {name:>10}", result)
        loop.run(client.close())
    return {name: runs[name] for name, _ in steps}


def report(
    runs: dict[str, list[dict[str, Any]]],
    http_runs: dict[str, list[dict[str, Any]]],
    mismatches: list[str],
) -> None:
    base = median_of(runs["generate"], "aggregate_tokens_per_s")
    head = "| variant | streams | aggregate tok/s | per-stream tok/s | TTFT p50/max ms | x generate"
    print(f"\n## interleaved rounds (medians of {len(runs['generate'])}; ratio vs generate())")
    print(f"{head} |\n|---|---|---|---|---|---|")
    for name, results in runs.items():
        agg = median_of(results, "aggregate_tokens_per_s")
        print(
            f"| {name} | {results[0]['streams']} | {agg:.1f} "
            f"| {median_of(results, 'per_stream_tokens_per_s'):.1f} "
            f"| {median_of(results, 'ttft_p50_s') * 1000:.0f} / "
            f"{median_of(results, 'ttft_max_s') * 1000:.0f} | {agg / base:.2f} |"
        )
    if http_runs:
        phase_base = median_of(http_runs["generate"], "aggregate_tokens_per_s")
        rounds = len(http_runs["generate"])
        print(f"\n## with `turnout serve` up (medians of {rounds}; ratios within this phase)")
        print(f"{head} | x engine |\n|---|---|---|---|---|---|---|")
        for name, results in http_runs.items():
            agg = median_of(results, "aggregate_tokens_per_s")
            engine = http_runs.get(name.replace("http", "engine"))
            vs_engine = (
                f"{agg / median_of(engine, 'aggregate_tokens_per_s'):.2f}"
                if engine and name.startswith("http")
                else ""
            )
            print(
                f"| {name} | {results[0]['streams']} | {agg:.1f} "
                f"| {median_of(results, 'per_stream_tokens_per_s'):.1f} "
                f"| {median_of(results, 'ttft_p50_s') * 1000:.0f} / "
                f"{median_of(results, 'ttft_max_s') * 1000:.0f} "
                f"| {agg / phase_base:.2f} | {vs_engine} |"
            )
    print("\ntargets (interleaved medians):")
    for label, name, target in (
        ("single stream >= 0.9x generate()", "engine_x1", 0.9),
        ("16 streams    >= 4x generate()  ", "engine_x16", 4.0),
    ):
        ratio = median_of(runs[name], "aggregate_tokens_per_s") / base
        print(f"  {label}: {ratio:.2f}x  {'met' if ratio >= target else 'MISSED'}")
    agreement = "; ".join(mismatches) if mismatches else "yes"
    print(f"greedy tokens equal generate()'s up to EOS: {agreement}")


if __name__ == "__main__":
    main()
