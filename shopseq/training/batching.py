"""Length-aware batches of per-user windows.

Each training user contributes ONE window per epoch: the last ``window`` events of its sequence,
left-aligned (position 0 = oldest event in the window; zeros after the end). Users are sorted by
window length (random order among equal lengths) and cut into batches of ``batch_size`` users,
and the batch order is shuffled: a batch is padded only to its own longest row, so the encoder
processes ~the real number of events instead of ``users x max_len`` (DESIGN.md: 8x fewer tokens
on Amazon Beauty). Every window (hence every target) appears exactly once per epoch.
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

    @property
    def size(self) -> int:
        return int(self.items.shape[0])


class LengthBatcher:
    """Batches over the users of ``offsets``/``items`` with at least ``min_length`` events."""

    def __init__(self, offsets: np.ndarray, items: np.ndarray, window: int, batch_size: int,
                 min_length: int = 2, types: np.ndarray | None = None, timestamps: np.ndarray | None = None) -> None:
        if window < 1 or batch_size < 1:
            raise ValueError("window and batch_size must be >= 1")
        offsets = np.asarray(offsets, dtype=np.int64)
        full = np.diff(offsets)
        self.users = np.flatnonzero(full >= min_length)
        self.lengths = np.minimum(full[self.users], window)  # window length of every kept user
        self.ends = offsets[self.users + 1]
        self.items = np.asarray(items)
        # event features are gathered only for models that read them (they cost time per batch)
        self.types = None if types is None else np.asarray(types)
        self.timestamps = None if timestamps is None else np.asarray(timestamps)
        self.window = window
        self.batch_size = batch_size

    @classmethod
    def from_sequences(cls, seqs: Sequences, window: int, batch_size: int, min_length: int = 2,
                       with_features: bool = False) -> LengthBatcher:
        if with_features:
            return cls(seqs.offsets, seqs.items, window, batch_size, min_length, seqs.event_types, seqs.timestamps)
        return cls(seqs.offsets, seqs.items, window, batch_size, min_length)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_events(self) -> int:
        """Events inside the windows (the tokens an epoch processes)."""
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return -(-self.n_users // self.batch_size)

    def plan(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch: a list of arrays of row numbers (into ``self.users``), one per batch."""
        order = np.lexsort((rng.random(self.n_users), self.lengths))  # by length, ties at random
        chunks = [order[i:i + self.batch_size] for i in range(0, self.n_users, self.batch_size)]
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
                     None if self.timestamps is None else take(self.timestamps))

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        for rows in self.plan(rng):
            yield self.make(rows)
