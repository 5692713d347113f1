"""Host-side sequence packing: tokenized sentences -> static-shape `[R, T]` batches.

Sentences are sorted by token length (longest first). Each step takes the
longest remaining sentence, picks the row length `T` as the smallest bucket
that holds it, and fills `R` rows of `T` tokens: every row starts with the
longest remaining sentence and is topped up with whatever else still fits
(next-longest first, then the shortest), so the dense layers see almost no
padding while the shapes come from a handful of buckets (one XLA compile per
`(R, T)` pair). `R ~ budget // T`, so every step has about the same number
of tokens; the last step's rows are padded to a power-of-two multiple of the
micro-batch rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_BUCKETS = (32, 64, 128, 256)


@dataclass(frozen=True)
class PackedBatch:
    """One packed step.

    input_ids, position_ids, segment_ids, slot_ids: [R, T] int32.
    segment_ids numbers sentences within a row (1, 2, ...; 0 = padding);
    slot_ids gives each token its sentence's output slot in [0, num_slots)
    (padding tokens point at slot `num_slots`, which is dropped).
    sentence_index: [num_slots] int64, the input position of each slot's
    sentence, -1 for unused slots.
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    segment_ids: np.ndarray
    slot_ids: np.ndarray
    sentence_index: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    @property
    def num_slots(self) -> int:
        return int(self.sentence_index.shape[0])


def bucket_lengths(max_len: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """Sorted bucket lengths below `max_len`, plus `max_len` itself."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 ([CLS] and [SEP]), got {max_len}")
    return tuple(sorted({b for b in buckets if 0 < b < max_len} | {max_len}))


def plan_rows(lengths: np.ndarray, *, rows_for: Callable[[int], int], buckets: tuple[int, ...],
              max_per_row: int) -> list[tuple[int, list[list[int]]]]:
    """Group sentences into steps of rows.

    lengths: [n] token counts (each <= max(buckets)). rows_for(T): rows per
    step of row length T. Returns a list of steps
    `(T, rows)`, each row a list of sentence indices whose lengths sum to <= T,
    at most `max_per_row` per row. Every index appears exactly once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > max(buckets)):
        raise ValueError(f"token lengths must lie in [1, {max(buckets)}], got [{lengths.min()}, {lengths.max()}]")
    order = np.argsort(-lengths, kind="stable").tolist()
    lens = lengths.tolist()
    lo, hi = 0, len(order) - 1
    steps: list[tuple[int, list[list[int]]]] = []
    while lo <= hi:
        t = next(b for b in buckets if b >= lens[order[lo]])
        n_rows = rows_for(t)
        rows: list[list[int]] = []
        while len(rows) < n_rows and lo <= hi:
            row, room = [order[lo]], t - lens[order[lo]]
            lo += 1
            while lo <= hi and len(row) < max_per_row:
                if lens[order[lo]] <= room:
                    row.append(order[lo])
                    room -= lens[order[lo]]
                    lo += 1
                elif lens[order[hi]] <= room:
                    row.append(order[hi])
                    room -= lens[order[hi]]
                    hi -= 1
                else:
                    break
            rows.append(row)
        steps.append((t, rows))
    return steps


def step_rows(t: int, *, budget: int, micro_tokens: int) -> tuple[int, int]:
    """(rows per full step, rows per micro-batch) for row length `t`.

    Micro-batches hold `micro_tokens // t` rows (at least 1); a full step
    holds about `budget // t` rows, rounded down to a whole number of
    micro-batches (at least one).
    """
    chunk = max(1, micro_tokens // t)
    return max(chunk, (budget // t) // chunk * chunk), chunk


def padded_rows(n_used: int, *, n_rows: int, chunk: int) -> int:
    """Rows to allocate for a step using `n_used` rows: `n_rows` when full, else the
    smallest `chunk * 2**j` >= n_used (capped at n_rows), so ragged last steps reuse few shapes."""
    r = chunk
    while r < n_used:
        r *= 2
    return min(n_rows, r)


def pack_step(token_ids: list[list[int]], t: int, rows: list[list[int]], *, n_rows: int,
              max_per_row: int, chunk: int = 1, pad_id: int = 0) -> PackedBatch:
    """Lay out one planned step as a `PackedBatch` of shape [padded_rows(...), t]."""
    if len(rows) > n_rows:
        raise ValueError(f"step has {len(rows)} rows, more than n_rows={n_rows}")
    r = padded_rows(len(rows), n_rows=n_rows, chunk=chunk)
    num_slots = n_rows * max_per_row
    ids = np.full((r, t), pad_id, np.int32)
    pos = np.zeros((r, t), np.int32)
    seg = np.zeros((r, t), np.int32)
    slot = np.full((r, t), num_slots, np.int32)
    sent = np.full((num_slots,), -1, np.int64)
    k = 0
    for ri, row in enumerate(rows):
        c = 0
        for si, idx in enumerate(row):
            toks = token_ids[idx]
            n = len(toks)
            ids[ri, c:c + n] = toks
            pos[ri, c:c + n] = np.arange(n, dtype=np.int32)
            seg[ri, c:c + n] = si + 1
            slot[ri, c:c + n] = k
            sent[k] = idx
            k += 1
            c += n
    return PackedBatch(ids, pos, seg, slot, sent)
