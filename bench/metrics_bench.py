"""What the Prometheus metrics add to each request: `RequestRecord.emit` timed with and
without a `Metrics`, with production logging (JSON lines, here to /dev/null).

    python bench/metrics_bench.py [--number 20000] [--repeat 7]

Prints the best-of-`repeat` mean per call in microseconds for three request shapes: a whole
answer (one attempt, usage), a stream (first-token time, usage) and a failover (three
failed attempts on one deployment, then another deployment answers).
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable

from policies.config import Deployment
from policies.plan import Target
from policies.retry import Attempt
from policies.trace import Trace
from router.accounting import RequestRecord
from router.logging import configure_logging
from router.metrics import Metrics

USAGE = {"prompt_tokens": 12, "completion_tokens": 48, "total_tokens": 60}
PRIMARY = Target("chat-small", Deployment(provider="upstream-a", model="some-model"))
SECONDARY = Target("chat-small", Deployment(provider="upstream-b", model="other-model"))


def shapes() -> dict[str, Callable[[], Trace]]:
    def whole() -> Trace:
        return Trace(0.0, [Attempt(PRIMARY.label, "ok", 200, 120.0)], PRIMARY)

    def failover() -> Trace:
        failed = [Attempt(PRIMARY.label, "503 server_error", 503, 3.0)] * 3
        return Trace(0.0, [*failed, Attempt(SECONDARY.label, "ok", 200, 90.0)], SECONDARY)

    return {"whole": whole, "stream": whole, "failover": failover}


def emit_once(shape: str, trace: Trace, metrics: Metrics | None) -> Callable[[], None]:
    def run() -> None:
        record = RequestRecord("chat", "req_0123456789ab0000000001", model="chat-small")
        record.metrics, record.trace = metrics, trace
        if shape == "stream":
            record.stream = True
            record.mark_first_chunk()
        record.emit(200, usage=USAGE)

    return run


def best_us(run: Callable[[], None], number: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log's sink for the whole run
    configure_logging("info")
    metrics = Metrics()
    print(f"{'shape':<10}{'no metrics':>12}{'metrics':>12}{'added':>10}   (µs per request)")
    for shape, make in shapes().items():
        trace = make()
        without = best_us(emit_once(shape, trace, None), args.number, args.repeat)
        with_ = best_us(emit_once(shape, trace, metrics), args.number, args.repeat)
        print(f"{shape:<10}{without:>12.2f}{with_:>12.2f}{with_ - without:>+10.2f}")


if __name__ == "__main__":
    main()
