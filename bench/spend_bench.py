"""What spend accounting adds to a request, in process: pricing its upstream calls
(`request_cost` over the ledger), the figures the client and the log get (header value,
log fields), and adding it up (the spend book's dict increment per deployment, the
Prometheus counters) — against the same request with none of it. Two shapes: a plain
request (one call) and a failover (a broken billed attempt, then the answer on another
deployment). Then the background flush, off the request path: one flush of the rows a
busy second leaves, to SQLite.

    python bench/spend_bench.py [--number 20000] [--repeat 7] [--rows 200]

Prints the best-of-`repeat` mean per request in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
from pathlib import Path

from policies.policy_config import Price
from policies.pricing.book import PriceBook
from policies.pricing.cost import request_cost
from policies.spend.book import SpendBook
from policies.spend.rows import DayRange
from policies.spend.sqlite_spend import SqliteSpend
from providers.call_ledger import CallLedger, CallRecord
from router.cost_report import header_value, log_fields
from router.metrics import Metrics

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello " * 50}], "max_tokens": 64}
USAGE = {
    "prompt_tokens": 312,
    "completion_tokens": 64,
    "total_tokens": 376,
    "prompt_tokens_details": {"cached_tokens": 256},
}
PRICES = PriceBook(
    {
        "a/gpt-4o-mini": Price(prompt=0.15, completion=0.6, cached_prompt=0.075),
        "b/claude": Price(prompt=3.0, completion=15.0, per_request=0.0001),
    }
)


def ledger(failover: bool) -> CallLedger:
    calls = CallLedger()
    if failover:  # a stream broken after content: billed, no usage (its estimate)
        calls.tally("b/claude").calls.append(CallRecord(BODY))
    answering = calls.tally("a/gpt-4o-mini")
    answering.calls.append(CallRecord(BODY, USAGE))
    answering.settled = True
    return calls


def per_request(number: int, repeat: int, failover: bool) -> dict[str, float]:
    calls = ledger(failover)
    metrics, book = Metrics(process=False), SpendBook()

    def priced() -> None:
        cost = request_cost(calls, PRICES, USAGE)
        header_value(cost)
        log_fields(cost)

    def accounted() -> None:
        cost = request_cost(calls, PRICES, USAGE)
        header_value(cost)
        log_fields(cost)
        metrics.spent("research", "a4a6d307ad00", "m", cost)
        book.record("research", "a4a6d307ad00", "m", cost, "a/gpt-4o-mini")

    def nothing() -> None:
        pass

    found = {}
    for name, work in (("none", nothing), ("priced", priced), ("accounted", accounted)):
        best = min(timeit.repeat(work, number=number, repeat=repeat))
        found[name] = best / number * 1e6
    return found


async def flush_cost(rows: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = await SqliteSpend.open(Path(directory) / "spend.sqlite3")
        book = SpendBook(lambda: 1_700_000_000.0)
        book.start(store)
        cost = request_cost(ledger(False), PRICES, USAGE)
        times = []
        for _ in range(5):
            for i in range(rows):
                book.record(f"team{i % 10}", f"key{i}", "m", cost, "a/gpt-4o-mini")
            started = time.perf_counter()
            await book.flush()
            times.append(time.perf_counter() - started)
        assert await store.read(DayRange(0, 100_000))
        await book.aclose()
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    print("shape       | none µs | priced µs | priced + counted µs | added µs")
    for failover in (False, True):
        got = per_request(args.number, args.repeat, failover)
        added = got["accounted"] - got["none"]
        name = "failover" if failover else "plain"
        print(
            f"{name:<11} | {got['none']:7.2f} | {got['priced']:9.2f} | "
            f"{got['accounted']:19.2f} | {added:8.2f}"
        )
    ms = asyncio.run(flush_cost(args.rows))
    print(f"flush of {args.rows} rows to SQLite (background, once a second): {ms:.2f} ms")


if __name__ == "__main__":
    main()
