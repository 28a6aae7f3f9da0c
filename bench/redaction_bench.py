"""What masking costs: `Redactor.for_log` and `for_client` on a 4 KB upstream error
message, with 50 configured secrets (each in its every spelling: case, percent and HTML
escapes, hex, base64 at three alignments, fragments next to a mask run).

    python bench/redaction_bench.py [--number 200] [--repeat 5] [--secrets 50]

Prints the best-of-`repeat` mean per call in microseconds, for a message that holds no
secret (the common case) and one that holds five, in various spellings; and the time to
build the `Redactor` (once per config load).
"""

from __future__ import annotations

import argparse
import base64
import random
import string
import timeit
from collections.abc import Callable
from functools import partial

from policies.redaction import Redactor

MESSAGE_BYTES = 4096
PROSE = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted "
    "in 9120 tokens (request req_0123456789abcdef, deployment chat-small/a). Please reduce "
    "the length of the messages or completion. Loading... see https://example.com/docs. "
)


def make_secrets(count: int, rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits

    def word(n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    forms = (
        lambda: f"sk-proj-{word(48)}",
        lambda: f"sk-ant-api03-{word(40)}",
        lambda: word(32),
        lambda: f"org-{word(24)}",
        lambda: f"tk-{word(20)}",
    )
    return [forms[i % len(forms)]() for i in range(count)]


def message(secrets: list[str], leaked: int) -> str:
    parts = [PROSE]
    for secret in secrets[:leaked]:
        variants = (
            secret.lower(),
            base64.b64encode(f"user:{secret}".encode()).decode(),
            secret.replace("-", "%2d"),
            f"{secret[:6]}****{secret[-4:]}",
        )
        parts.append(f"key {variants[len(parts) % len(variants)]} rejected. ")
    text = "".join(parts)
    while len(text) < MESSAGE_BYTES:
        text += PROSE
    return text[:MESSAGE_BYTES]


def best_us(run: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--secrets", type=int, default=50)
    args = parser.parse_args()
    secrets = make_secrets(args.secrets, random.Random(7))
    build = best_us(lambda: Redactor.of(secrets, ["vllm.internal"]), 5, args.repeat)
    redactor = Redactor.of(secrets, ["vllm.internal"])
    print(f"{args.secrets} secrets; build once per config: {build / 1000:.1f} ms")
    for name, leaked in (("no secret", 0), ("5 secrets", 5)):
        text = message(secrets, leaked)
        assert len(text) == MESSAGE_BYTES
        log = best_us(partial(redactor.for_log, text), args.number, args.repeat)
        client = best_us(partial(redactor.for_client, text, "a/m"), args.number, args.repeat)
        print(f"{name:>10}: for_log {log:8.1f} us   for_client {client:8.1f} us")


if __name__ == "__main__":
    main()
