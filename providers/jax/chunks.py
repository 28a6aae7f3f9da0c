"""How `JaxRunner.prefill_chunks` lays chunks out in compiled passes, in pure Python.

A chunk longer than one pass's budget (`Buckets.chunk_limit`) is cut into pieces; the
n-th pieces of every chunk form round n (a piece needs the one before it in its slot's
cache, so rounds run in order). Within a round, pieces are sorted longest first and
packed greedily: a pass takes the longest piece left, pads it to its length bucket, then
takes as many of the next ones as that length's row cap allows (`Buckets.chunk_rows`, so
that rows x length stays within the budget). Pieces scored at every position go in passes
of their own (a different executable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from providers.jax.buckets import Buckets, ChunkShape
from providers.local.runner import PrefillChunk


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of chunk `chunk` (its index in the call): `tokens` at positions `start`.. of
    `slot`; `final` if it ends the chunk."""

    chunk: int
    slot: int
    tokens: Sequence[int]
    start: int
    final: bool


@dataclass(frozen=True, slots=True)
class Pass:
    """One executable run: `pieces` (at most `shape.rows`, the rest padding)."""

    shape: ChunkShape
    every_position: bool
    pieces: tuple[Piece, ...]


def plan_passes(chunks: Sequence[PrefillChunk], buckets: Buckets) -> list[Pass]:
    """The passes that prefill `chunks` (distinct slots), in the order they must run."""
    limit = buckets.chunk_limit
    rounds: list[list[tuple[Piece, bool]]] = []
    for index, chunk in enumerate(chunks):
        count = len(chunk.tokens)
        for number, offset in enumerate(range(0, count, limit)):
            if number == len(rounds):
                rounds.append([])
            piece = Piece(
                index,
                chunk.slot,
                chunk.tokens[offset : offset + limit],
                chunk.start + offset,
                final=offset + limit >= count,
            )
            rounds[number].append((piece, chunk.every_position))
    passes: list[Pass] = []
    for pieces in rounds:
        for every_position in (False, True):
            kind = [piece for piece, flag in pieces if flag == every_position]
            passes += _pack(kind, every_position, buckets)
    return passes


def _pack(pieces: list[Piece], every_position: bool, buckets: Buckets) -> list[Pass]:
    pending = sorted(pieces, key=lambda piece: len(piece.tokens), reverse=True)
    passes: list[Pass] = []
    while pending:
        length = buckets.chunk(len(pending[0].tokens))
        taken = tuple(pending[: buckets.chunk_rows(length)])
        pending = pending[len(taken) :]
        reach = max(piece.start + len(piece.tokens) for piece in taken)
        shape = ChunkShape(
            buckets.chunk_batch(len(taken), length), length, buckets.chunk_window(reach)
        )
        passes.append(Pass(shape, every_position, taken))
    return passes
