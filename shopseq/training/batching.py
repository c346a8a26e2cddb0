"""Length-aware batches of per-user windows.

By default each training user contributes ONE window per epoch: the last ``window`` events of its
sequence, left-aligned (position 0 = oldest event in the window; zeros after the end). With
``all_windows`` a history longer than the window is tiled from its end into windows that overlap by
one event (the last input of a window is the first of the next), so every event after a user's
first is a target exactly once per epoch, as in prefix-augmented training (RecBole) at a fraction
of the tokens. A ``stride`` below ``window - 1`` overlaps the windows further so that targets keep
more context: a row then carries loss only on its newest ``stride`` targets (all of them in a
user's oldest row), so each target still counts once, predicted from at least
``window - 1 - stride`` earlier events; the cost is ~``window / stride`` times the tokens.

Rows are sorted by window length (random order among equal lengths) and cut into batches of
``batch_size`` rows, and the batch order is shuffled: a batch is padded only to its own longest
row, so the encoder processes ~the real number of events instead of ``rows x max_len``
(DESIGN.md: 8x fewer tokens on Amazon Beauty). Every row appears exactly once per epoch.

With ``batch_targets`` a batch is cut by next-event targets instead of rows (a token budget, as
fairseq's ``max_tokens``): many short windows or few long ones, about that many targets each. A
step then learns from the same amount of evidence whatever the length of the histories, and the
unit is the one of prefix-sample trainers (RecBole's batch of 256 is 256 targets; 256 of our
windows of Amazon Beauty hold ~1,800).

The random order among equal lengths comes from a hash of each row's own events mixed with one
draw of the seeded generator per epoch, not from the row's position: users are numbered in the
order of their pseudonyms, which a new workspace (a new pseudonymisation key) reshuffles, and a
seeded run must still see the same batches in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from shopseq.data.sequences import Sequences

__all__ = ["Batch", "LengthBatcher"]


@dataclass
class Batch:
    items: torch.Tensor  # int64 (B, W): left-aligned windows, 0 after each row's end
    lengths: torch.Tensor  # int64 (B,): real events per row (>= 1)
    users: np.ndarray  # int64 (B,): user index of every row
    types: torch.Tensor | None = None  # int64 (B, W) event types, when the model reads them
    timestamps: torch.Tensor | None = None  # int64 (B, W) ms, when the model reads them
    first_target: torch.Tensor | None = None  # int64 (B,): first target column with loss (None: all)

    @property
    def size(self) -> int:
        return int(self.items.shape[0])

    def inputs(self) -> Batch:
        """The windows without their last event: what a causal model reads to predict ``items[:, 1:]``."""
        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[:, :-1]

        return Batch(self.items[:, :-1], self.lengths.clamp_max(self.items.shape[1] - 1), self.users,
                     cut(self.types), cut(self.timestamps))

    def loss_columns(self) -> torch.Tensor | None:
        """(B, W - 1) target columns at or after ``first_target`` (None: every column counts)."""
        if self.first_target is None:
            return None
        return torch.arange(self.items.shape[1] - 1)[None, :] >= self.first_target[:, None]

    def target_mask(self) -> torch.Tensor:
        """(B, W - 1) targets ``items[:, 1:]`` that carry loss: real ones, from ``first_target`` on."""
        keep = self.items[:, 1:] != 0
        columns = self.loss_columns()
        return keep if columns is None else keep & columns


class LengthBatcher:
    """Batches over the users of ``offsets``/``items`` with at least ``min_length`` events."""

    def __init__(self, offsets: np.ndarray, items: np.ndarray, window: int, batch_size: int,
                 min_length: int = 2, types: np.ndarray | None = None, timestamps: np.ndarray | None = None,
                 all_windows: bool = False, stride: int | None = None, batch_targets: int | None = None) -> None:
        if window < 1 or batch_size < 1:
            raise ValueError("window and batch_size must be >= 1")
        if batch_targets is not None and batch_targets < 1:
            raise ValueError("batch_targets must be >= 1")
        if all_windows and window < 2:
            raise ValueError("all_windows needs window >= 2 (a window of one event has no target)")
        stride = window - 1 if stride is None else stride
        if all_windows and not 1 <= stride <= window - 1:
            raise ValueError(f"stride must be in [1, window - 1] = [1, {window - 1}], got {stride}")
        offsets = np.asarray(offsets, dtype=np.int64)
        full = np.diff(offsets)
        kept = np.flatnonzero(full >= min_length)
        if all_windows:
            # row j of a user (j = 0 is the newest) ends j * stride events before its end; the
            # oldest row is the first that reaches back to the user's second event (a target)
            per_user = np.maximum(-(-(full[kept] - window) // stride), 0) + 1
            self.users = np.repeat(kept, per_user)
            first_row = np.repeat(np.cumsum(per_user) - per_user, per_user)
            back = (np.arange(len(self.users)) - first_row) * stride
            self.lengths = np.minimum(full[self.users] - back, window)
            self.ends = offsets[self.users + 1] - back
            oldest = np.repeat(np.cumsum(per_user) - 1, per_user) == np.arange(len(self.users))
            first = np.where(oldest, 0, np.maximum(self.lengths - 1 - stride, 0))
            self.first_target = first if first.any() else None
        else:
            self.users = kept
            self.lengths = np.minimum(full[kept], window)  # window length of every kept user
            self.ends = offsets[kept + 1]
            self.first_target = None
        self.items = np.asarray(items)
        # event features are gathered only for models that read them (they cost time per batch)
        self.types = None if types is None else np.asarray(types)
        self.timestamps = None if timestamps is None else np.asarray(timestamps)
        self.window = window
        self.batch_size = batch_size
        self.batch_targets = batch_targets
        self.content_keys = _window_hashes(self.items, self.ends, self.lengths, self.first_target)

    @classmethod
    def from_sequences(cls, seqs: Sequences, window: int, batch_size: int, min_length: int = 2,
                       with_features: bool = False, all_windows: bool = False,
                       stride: int | None = None, batch_targets: int | None = None) -> LengthBatcher:
        types, timestamps = (seqs.event_types, seqs.timestamps) if with_features else (None, None)
        return cls(seqs.offsets, seqs.items, window, batch_size, min_length, types, timestamps, all_windows, stride,
                   batch_targets)

    @property
    def n_users(self) -> int:
        """Rows per epoch: users, or windows with ``all_windows``."""
        return len(self.users)

    @property
    def target_lengths(self) -> np.ndarray:
        """Per row, the window length that counts for the loss (``lengths`` less the masked head)."""
        return self.lengths if self.first_target is None else self.lengths - self.first_target

    @property
    def n_events(self) -> int:
        """Events inside the windows (the tokens an epoch processes)."""
        return int(self.lengths.sum())

    @property
    def row_targets(self) -> np.ndarray:
        """Next-event targets of every row that carry loss (at least 1)."""
        return np.maximum(self.target_lengths - 1, 1)

    def __len__(self) -> int:
        if self.batch_targets is None:
            return -(-self.n_users // self.batch_size)
        return len(self._cuts(np.lexsort((self.row_targets, self.lengths)))) + 1 if self.n_users else 0

    def _cuts(self, order: np.ndarray) -> np.ndarray:
        """Positions in ``order`` where a new batch of ~``batch_targets`` targets starts: a batch
        takes the rows whose first target falls in its slice of the running total."""
        targets = self.row_targets[order]
        slot = (np.cumsum(targets) - targets) // self.batch_targets
        return np.flatnonzero(np.diff(slot)) + 1

    def plan(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch: a list of arrays of row numbers (into ``self.users``), one per batch."""
        salt = np.uint64(rng.integers(0, 2**63))
        if self.batch_targets is None:
            order = np.lexsort((_mix(self.content_keys ^ salt), self.lengths))  # by length, ties at random
            chunks = [order[i:i + self.batch_size] for i in range(0, self.n_users, self.batch_size)]
        else:  # rows of equal length also sorted by targets, so that the cuts are the same every epoch
            order = np.lexsort((_mix(self.content_keys ^ salt), self.row_targets, self.lengths))
            chunks = np.split(order, self._cuts(order)) if self.n_users else []
        return [chunks[i] for i in rng.permutation(len(chunks))]

    def make(self, rows: np.ndarray) -> Batch:
        """The padded batch of the given rows (vectorised gather, no Python loop over users)."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        cols = np.arange(width)
        valid = cols[None, :] < lengths[:, None]
        src = (self.ends[rows] - lengths)[:, None] + cols[None, :]
        src = np.where(valid, src, 0)

        def take(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.where(valid, values[src], 0).astype(np.int64))

        return Batch(take(self.items), torch.from_numpy(lengths.astype(np.int64)), self.users[rows],
                     None if self.types is None else take(self.types),
                     None if self.timestamps is None else take(self.timestamps),
                     None if self.first_target is None else torch.from_numpy(self.first_target[rows].astype(np.int64)))

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        for rows in self.plan(rng):
            yield self.make(rows)


_MULT = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: uint64 -> well-spread uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _window_hashes(items: np.ndarray, ends: np.ndarray, lengths: np.ndarray, first_target: np.ndarray | None,
                   rows_per_chunk: int = 65_536) -> np.ndarray:
    """uint64 hash of each row's window items (and its first loss column), computed in chunks
    of rows: a key that depends on what a row holds, not on where its user sits in the data."""
    out = np.empty(len(lengths), dtype=np.uint64)
    width = int(lengths.max()) if len(lengths) else 0
    cols = np.arange(width)
    with np.errstate(over="ignore"):
        for lo in range(0, len(lengths), rows_per_chunk):
            hi = min(lo + rows_per_chunk, len(lengths))
            n = lengths[lo:hi]
            valid = cols[None, :] < n[:, None]
            src = np.where(valid, (ends[lo:hi] - n)[:, None] + cols[None, :], 0)
            h = n.astype(np.uint64) * _MULT
            if first_target is not None:
                h ^= _mix(first_target[lo:hi].astype(np.uint64) + np.uint64(1))
            for j in range(width):  # a loop over columns (<= the window), not over rows
                column = np.where(valid[:, j], items[src[:, j]], 0).astype(np.uint64)
                h = _mix(h ^ column)
            out[lo:hi] = h
    return out
