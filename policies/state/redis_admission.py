"""All-or-nothing admission when one request's limits live in several hash slots.

On one Redis node every limit of a request is checked and taken by one script, atomically.
On Redis Cluster a script may touch one slot only, and a request's limits have several
owners (its key's under `{key:<id>}`, its team's under `{team:<name>}`: `redis_keys.py`),
so `RedisStore` groups them by slot and calls `admit_across_slots`, which runs one script
per slot in sequence, each checking and taking its own limits atomically:

1. the groups are ordered tightest first (the fewest calls of this cost fit): that is the
   group most likely to refuse, and a refusal there has reserved nothing anywhere else;
2. each group is admitted in turn; when one refuses, what the groups before it took is
   given back (a refund), the groups after it are only checked (for their states), and the
   admission is refused, naming the refusing group's first limit without room.

So nothing is ever over-admitted: every limit's counter holds every admitted request's
cost at all times. A reservation that is refunded held its room for a moment, during which
a concurrent request may have been refused that would have fit (a brief under-admission),
and a refund that cannot reach its slot (an outage there) keeps its room until the bucket
refills or the budget's period ends. `refused_by` names the first limit without room in the
order the groups ran, not necessarily the first of the list given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
# Runs one slot's script on the limits at these indexes: "admit" (check and take),
# "check" (take nothing, states as a refusal reports them), "charge" or "peek". Returns the
# 1-based index within the group of the first limit without room (0: none), and one item
# per limit.
RunGroup = Callable[[str, Sequence[int]], Awaitable[tuple[int, list[T]]]]
# Gives back what an "admit" of this group took (given the items it returned); returns the
# items after it.
Refund = Callable[[Sequence[int], list[T]], Awaitable[list[T]]]


async def admit_across_slots(
    groups: Sequence[Sequence[int]],
    run: RunGroup[T],
    refund: Refund[T],
    room: Callable[[int], float],
    size: int,
) -> tuple[int, list[T]]:
    """(1-based index of the refusing limit in the whole list, 0 if admitted; one item per
    limit, in the list's order). `room(i)`: how many calls of this cost limit i holds."""
    order = sorted(groups, key=lambda group: min(room(i) for i in group))
    items: list[T | None] = [None] * size
    taken: list[tuple[Sequence[int], list[T]]] = []
    for k, group in enumerate(order):
        try:
            refused, got = await run("admit", group)
        except BaseException:
            await _refund(refund, taken, items)
            raise
        _place(items, group, got)
        if refused:
            rest = order[k + 1 :]
            checks = asyncio.gather(*(run("check", g) for g in rest))
            _, checked = await asyncio.gather(_refund(refund, taken, items), checks)
            for g, (_, states) in zip(rest, checked, strict=True):
                _place(items, g, states)
            return group[refused - 1] + 1, _whole(items)
        taken.append((group, got))
    return 0, _whole(items)


async def each_slot(
    groups: Sequence[Sequence[int]], run: RunGroup[T], mode: str, size: int
) -> tuple[int, list[T]]:
    """A mode that takes no decision ("charge", "peek"): every group at once."""
    replies = await asyncio.gather(*(run(mode, group) for group in groups))
    items: list[T | None] = [None] * size
    for group, (_, got) in zip(groups, replies, strict=True):
        _place(items, group, got)
    return 0, _whole(items)


async def _refund(
    refund: Refund[T], taken: Sequence[tuple[Sequence[int], list[T]]], items: list[T | None]
) -> None:
    """Best effort: a refund that fails (an outage of its slot) leaves its reservation to
    expire or refill; the admission's own outcome is what the caller hears about."""
    replies = await asyncio.gather(*(refund(*step) for step in taken), return_exceptions=True)
    for (group, _), reply in zip(taken, replies, strict=True):
        if isinstance(reply, BaseException):
            if not isinstance(reply, Exception):
                raise reply  # cancelled, or the process is exiting
            continue
        _place(items, group, reply)


def _place(items: list[T | None], group: Sequence[int], got: Sequence[T]) -> None:
    for i, item in zip(group, got, strict=True):
        items[i] = item


def _whole(items: list[T | None]) -> list[T]:
    missing = [i for i, item in enumerate(items) if item is None]
    if missing:
        raise AssertionError(f"no state for limits {missing}")
    return [item for item in items if item is not None]
