"""Non-neural baselines: popularity, first-order Markov, sequential item-kNN, repeat-last-items
and carted-first (the next-purchase rule).

All of them are counted from the training events with numpy in a few vectorised passes (no Python
loop over users or events; sparse item x item matrices are a small numpy CSR type, so scipy is not
needed) and saved as plain numpy arrays (sparse matrices as CSR ``indptr`` / ``indices`` /
``data``). Every one backs off to all-time popularity, scaled so that it
only orders items the model itself has no opinion about (or ties), never overrides it.

``encode`` (shared): the mean one-hot "bag" of the items in the history window the model reads
(the last ``max_len`` events), as a dense float32 (B, n_items + 1) array. These models have no
latent space, so this is the honest fixed-size user vector; it costs ``4 * (n_items + 1)`` bytes
per user (48 kB at 12k items, 4 MB at 1M items), so encode in batches on big catalogues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import torch
from pydantic import Field

from shopseq.data.schema import EventType
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.models.base import Histories, ModelConfig, Recommender
from shopseq.models.pointer import next_sighting
from shopseq.models.registry import register

__all__ = [
    "CSR",
    "CartFirst",
    "CartFirstConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "Markov",
    "MarkovConfig",
    "Pop",
    "PopConfig",
    "PopRecent",
    "PopRecentConfig",
    "Repeat",
    "RepeatConfig",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


# ---------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------
class _Baseline(Recommender):
    """Popularity counts, the fitted check, ``encode`` and (de)serialisation helpers."""

    score_kind = "weights"

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.counts: np.ndarray | None = None  # int64 (n_items + 1,): training events per item

    # -- helpers ------------------------------------------------------------------------------
    def _item_counts(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if len(items) and (items.min() < 1 or items.max() > self.n_items):
            raise ValueError(f"training items must lie in 1..{self.n_items} (got {items.min()}..{items.max()})")
        return np.bincount(items, minlength=self.n_items + 1).astype(np.int64)

    def _fitted(self) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load a saved model")
        return self.counts

    @property
    def popularity(self) -> np.ndarray:
        """All-time popularity scaled to [0, 1] (float64, column 0 = 0)."""
        counts = self._fitted().astype(np.float64)
        return counts / max(counts.max(), 1.0)

    def _window(self, histories: Histories) -> np.ndarray:
        """The last ``max_len`` columns: results never depend on how much history a caller passes."""
        return histories.items[:, -self.max_len:].astype(np.int64)

    def encode(self, histories: Histories) -> np.ndarray:
        width = self.n_items + 1
        items = self._window(histories)
        b = items.shape[0]
        real = items > 0
        n_real = np.maximum(real.sum(axis=1, keepdims=True), 1)
        weights = np.broadcast_to(1.0 / n_real, items.shape)[real]
        rows = np.broadcast_to(np.arange(b)[:, None], items.shape)[real]
        bag = np.bincount(rows * width + items[real], weights=weights, minlength=b * width)
        return bag.reshape(b, width).astype(np.float32)

    def _check_train(self, train: Sequences) -> None:
        if train.n_items > self.n_items:
            raise ValueError(f"training data has {train.n_items} items but the model was built for {self.n_items}")


@dataclass
class CSR:
    """A square sparse matrix in CSR form (rows sorted, no duplicate entries)."""

    indptr: np.ndarray  # int64 (n + 1,)
    indices: np.ndarray  # int32 (nnz,)
    data: np.ndarray  # float32 (nnz,)

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.data)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n: int, values: np.ndarray | None = None) -> CSR:
        """Sum of ``values`` (default 1) per (row, col) pair, duplicates added up."""
        keys = rows.astype(np.int64) * n + cols.astype(np.int64)
        uniq, inverse = np.unique(keys, return_inverse=True)
        data = np.bincount(inverse, weights=values, minlength=len(uniq))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(uniq // n, minlength=n), out=indptr[1:])
        return cls(indptr, (uniq % n).astype(np.int32), data.astype(np.float32))

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(batch position, entry index)`` of every stored entry of the selected rows (jagged, vectorised)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.indptr[rows], np.diff(self.indptr)[rows]
        owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        first = np.cumsum(lengths) - lengths  # where each selected row begins in the output
        entry = np.arange(int(lengths.sum()), dtype=np.int64) - first[owner] + starts[owner]
        return owner, entry

    def combine(self, out: np.ndarray, rows: np.ndarray, weights: np.ndarray, n_out: int) -> torch.Tensor:
        """Dense float32 (n_out, n) with ``dense[out[j]] += weights[j] * self[rows[j]]`` for every ``j``:
        a sparse (n_out x n) @ self product without materialising either sparse operand."""
        pos, entry = self.gather(rows)
        flat = torch.from_numpy(np.asarray(out, dtype=np.int64)[pos] * self.n + self.indices[entry])
        vals = torch.from_numpy((np.asarray(weights, dtype=np.float32)[pos] * self.data[entry]).astype(np.float32))
        dense = torch.zeros(n_out * self.n, dtype=torch.float32)
        dense.index_add_(0, flat, vals)
        return dense.view(n_out, self.n)

    def top_per_row(self, k: int) -> CSR:
        """Keep the ``k`` largest entries of every row (ties: lower column first)."""
        rows = self.row_ids()
        order = np.lexsort((self.indices, -self.data, rows))  # by row, then value descending
        keep = np.sort(order[np.arange(len(order)) - self.indptr[rows[order]] < k])
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[keep], minlength=self.n), out=indptr[1:])
        return CSR(indptr, self.indices[keep], self.data[keep])

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_indptr": self.indptr.astype(np.int64), f"{prefix}_indices": self.indices.astype(np.int32),
                f"{prefix}_data": self.data.astype(np.float32)}

    @classmethod
    def from_state(cls, prefix: str, tensors: dict[str, np.ndarray]) -> CSR:
        return cls(np.asarray(tensors[f"{prefix}_indptr"], dtype=np.int64),
                   np.asarray(tensors[f"{prefix}_indices"], dtype=np.int32),
                   np.asarray(tensors[f"{prefix}_data"], dtype=np.float32))


def _event_users(train: Sequences) -> np.ndarray:
    return np.repeat(np.arange(train.n_users, dtype=np.int64), train.lengths())


# ---------------------------------------------------------------------------------------------
# Popularity
# ---------------------------------------------------------------------------------------------
class PopConfig(ModelConfig):
    model: Literal["pop"] = "pop"
    window_days: float | None = Field(None, gt=0, description="count only the last N days of training data")
    max_len: int = Field(50, ge=1, description="history window read by encode")


@register
class Pop(_Baseline):
    """Most popular items, the same list for everyone. With ``window_days`` only the events of the
    last N days of the training data count (all-time popularity breaks the ties among the rest).
    Timestamps must be real clock times for the window to mean days (not ordinal positions)."""

    name = "pop"
    config_class = PopConfig
    config: PopConfig

    def __init__(self, config: PopConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.window_counts: np.ndarray | None = None
        self._scores: torch.Tensor | None = None

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        self._check_train(train)
        self.counts = self._item_counts(train.items)
        items = np.asarray(train.items)
        if self.config.window_days is not None and len(items):
            ts = np.asarray(train.timestamps)
            recent = ts >= ts.max() - self.config.window_days * DAY_MS
            self.window_counts = self._item_counts(items[recent])
        else:
            self.window_counts = self.counts.copy()
        self._prepare()
        return self

    def _prepare(self) -> None:
        window = self.window_counts if self.window_counts is not None else self._fitted()
        recent = window.astype(np.float64) / max(window.max(), 1.0)
        # window counts are integers, so the < 1 count step of the all-time tie-breaker never reorders them
        scores = recent + 0.5 * self.popularity / max(window.max(), 1.0)
        scores[0] = 0.0
        self._scores = torch.from_numpy(scores.astype(np.float32))

    def score(self, histories: Histories) -> torch.Tensor:
        self._fitted()
        assert self._scores is not None
        return self._scores.repeat(histories.batch_size, 1)  # a fresh tensor: callers may write into it

    def state(self) -> dict[str, np.ndarray]:
        assert self.window_counts is not None
        return {"counts": self._fitted(), "window_counts": self.window_counts}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(tensors["counts"], dtype=np.int64)
        self.window_counts = np.asarray(tensors["window_counts"], dtype=np.int64)
        self._prepare()


class PopRecentConfig(ModelConfig):
    model: Literal["pop_recent"] = "pop_recent"
    window_days: float = Field(7.0, gt=0, description="count only the last N days of training data")
    max_len: int = Field(50, ge=1, description="history window read by encode")


@register
class PopRecent(Pop):
    """``pop`` over the last ``window_days`` (default 7) of the training data."""

    name = "pop_recent"
    config_class = PopRecentConfig  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# First-order Markov chain
# ---------------------------------------------------------------------------------------------
class MarkovConfig(ModelConfig):
    model: Literal["markov"] = "markov"
    self_loops: bool = Field(True, description="count A -> A transitions (repeated views of one item)")
    max_gap_hours: float | None = Field(
        None, gt=0, description="ignore transitions between events further apart than this (e.g. across sessions)"
    )
    backoff_weight: float = Field(0.5, ge=0, lt=1, description="popularity tie-breaker; < 1 never overrides counts")
    max_len: int = Field(50, ge=1, description="history window read by encode (score reads the last item)")


@register
class Markov(_Baseline):
    """P(next item | last item), counted from consecutive training events of each user.

    ``score = (transitions[last] + backoff_weight * popularity) / row total``: a probability row,
    with popularity (in [0, 1], times a weight < 1) ordering the items the last item never led to
    and breaking count ties; users whose last item has no outgoing transition get pure popularity.
    """

    name = "markov"
    config_class = MarkovConfig
    config: MarkovConfig

    def __init__(self, config: MarkovConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.transitions: CSR | None = None

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        self._check_train(train)
        self.counts = self._item_counts(train.items)
        items = np.asarray(train.items, dtype=np.int64)
        users = _event_users(train)
        keep = users[1:] == users[:-1]  # consecutive events of the same user
        if not self.config.self_loops:
            keep &= items[1:] != items[:-1]
        if self.config.max_gap_hours is not None:
            ts = np.asarray(train.timestamps)
            keep &= (ts[1:] - ts[:-1]) <= self.config.max_gap_hours * HOUR_MS
        n = self.n_items + 1
        self.transitions = CSR.from_pairs(items[:-1][keep], items[1:][keep], n)
        return self

    def score(self, histories: Histories) -> torch.Tensor:
        if self.transitions is None:
            self._fitted()
        assert self.transitions is not None
        last = histories.items[:, -1].astype(np.int64)  # right-aligned: 0 when the history is empty
        rows = self.transitions.combine(np.arange(len(last)), last, np.ones(len(last)), len(last))
        totals = rows.sum(dim=1, keepdim=True).clamp_(min=1.0)  # float32 counts: exact up to 2**24
        rows += torch.from_numpy((self.config.backoff_weight * self.popularity).astype(np.float32))[None, :]
        rows /= totals
        rows[:, 0] = 0.0
        return rows

    def state(self) -> dict[str, np.ndarray]:
        assert self.transitions is not None
        return {"counts": self._fitted(), **self.transitions.state("transitions")}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(tensors["counts"], dtype=np.int64)
        self.transitions = CSR.from_state("transitions", tensors)


# ---------------------------------------------------------------------------------------------
# Sequential item-kNN
# ---------------------------------------------------------------------------------------------
class ItemKNNConfig(ModelConfig):
    model: Literal["itemknn"] = "itemknn"
    window: int = Field(5, ge=1, description="items co-occur when at most this many events apart (same user)")
    neighbours: int = Field(100, ge=1, description="most similar items kept per item")
    last_n: int = Field(5, ge=1, description="history items that vote")
    decay: float = Field(0.6, gt=0, le=1, description="vote weight of the j-th most recent item: decay ** j")
    shrink: float = Field(20.0, ge=0, description="cosine shrinkage: c_ij / (sqrt(n_i n_j) + shrink)")
    self_similarity: bool = Field(True, description="count an item re-occurring within the window (re-views)")
    max_len: int = Field(50, ge=1, description="history window read by encode")


@register
class ItemKNN(_Baseline):
    """Session/sequence item-kNN: items are similar when they occur within ``window`` events of each
    other in a user's sequence (both directions, cosine-normalised by item frequency; an item is
    never its own neighbour). ``score = sum_j decay**j * sim[h_{-1-j}]`` over the last ``last_n``
    history items; popularity, scaled below the smallest possible vote, orders everything else."""

    name = "itemknn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.similarity: CSR | None = None

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        self._check_train(train)
        self.counts = self._item_counts(train.items)
        items = np.asarray(train.items, dtype=np.int64)
        users = _event_users(train)
        src, dst = [], []
        for d in range(1, self.config.window + 1):  # a few offsets, each one vectorised pass
            keep = users[d:] == users[:-d]
            if not self.config.self_similarity:
                keep &= items[d:] != items[:-d]
            src += [items[:-d][keep], items[d:][keep]]
            dst += [items[d:][keep], items[:-d][keep]]
        a, b = np.concatenate(src or [np.zeros(0, np.int64)]), np.concatenate(dst or [np.zeros(0, np.int64)])
        n = self.n_items + 1
        co = CSR.from_pairs(a, b, n)
        norm = np.sqrt(self.counts.astype(np.float64))
        co.data = (co.data / (norm[co.row_ids()] * norm[co.indices] + self.config.shrink)).astype(np.float32)
        self.similarity = co.top_per_row(self.config.neighbours)
        return self

    def score(self, histories: Histories) -> torch.Tensor:
        if self.similarity is None:
            self._fitted()
        assert self.similarity is not None
        items = self._window(histories)
        b, width = items.shape
        n = min(self.config.last_n, width)
        recent = items[:, width - n:][:, ::-1]  # column j = j-th most recent
        weights = np.broadcast_to(self.config.decay ** np.arange(n), recent.shape)
        real = recent > 0
        rows = np.broadcast_to(np.arange(b)[:, None], recent.shape)
        scores = self.similarity.combine(rows[real], recent[real], weights[real], b)
        # the smallest possible vote: one neighbour at the lowest kept similarity, oldest position
        floor = (float(self.similarity.data.min()) if self.similarity.nnz else 1.0) * self.config.decay ** (n - 1)
        scores += torch.from_numpy((0.5 * floor * self.popularity).astype(np.float32))[None, :]
        scores[:, 0] = 0.0
        return scores

    def state(self) -> dict[str, np.ndarray]:
        assert self.similarity is not None
        return {"counts": self._fitted(), **self.similarity.state("similarity")}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(tensors["counts"], dtype=np.int64)
        self.similarity = CSR.from_state("similarity", tensors)


# ---------------------------------------------------------------------------------------------
# Repeat the user's own items
# ---------------------------------------------------------------------------------------------
class RepeatConfig(ModelConfig):
    model: Literal["repeat"] = "repeat"
    decay: float = Field(0.9, gt=0, le=1, description="weight of an event j steps back: decay ** j")
    max_len: int = Field(50, ge=1, description="how many recent events count")


@register
class Repeat(_Baseline):
    """Repeat-last-items, for repeat-purchase domains (groceries, consumables, re-viewing):
    ``score = sum over the last max_len events of decay ** (steps back)`` per item, so frequent and
    recent items of the user's own history come first; every history item outranks every other
    item, which are ordered by popularity. Evaluate it with ``filter_seen=False`` — with seen
    items filtered it degenerates to ``pop``."""

    name = "repeat"
    config_class = RepeatConfig
    config: RepeatConfig

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        self._check_train(train)
        self.counts = self._item_counts(train.items)
        return self

    def score(self, histories: Histories) -> torch.Tensor:
        pop = self.popularity
        items = torch.from_numpy(self._window(histories))
        b, width = items.shape
        steps_back = torch.arange(width - 1, -1, -1, dtype=torch.float64)
        weights = (self.config.decay ** steps_back).expand(b, -1) * (items > 0)
        scores = torch.zeros(b, self.n_items + 1, dtype=torch.float64).scatter_add_(1, items, weights)
        # below half the weight of the oldest counted event: history items always stay on top
        floor = self.config.decay ** (self.max_len - 1)
        scores += 0.5 * floor * torch.from_numpy(pop)[None, :]
        scores[:, 0] = 0.0
        return scores.to(torch.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self._fitted()}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.counts = np.asarray(tensors["counts"], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Carted first: the next-purchase rule
# ---------------------------------------------------------------------------------------------
class CartFirstConfig(RepeatConfig):
    model: Literal["cartfirst"] = "cartfirst"  # type: ignore[assignment]


@register
class CartFirst(Repeat):
    """What a shop would guess a user buys next: the items carted (or favourited) and not bought
    since, most recent first; then every other item of the history, most recent first; then the
    rest by popularity. The honest bar for a next-purchase head (``EvalConfig(head="purchase")``)
    when the visit's carts are known: a learned head that cannot beat it has not learned "buy
    what was carted". Reads the history's event types; without them it is ``repeat`` by recency."""

    name = "cartfirst"
    config_class = CartFirstConfig  # type: ignore[assignment]
    config: CartFirstConfig  # type: ignore[assignment]

    def score(self, histories: Histories) -> torch.Tensor:
        pop = self.popularity
        width = min(self.max_len, histories.items.shape[1])
        items = torch.from_numpy(self._window(histories))
        types = torch.from_numpy(histories.types[:, -width:].astype(np.int64))
        bought_later = next_sighting(items, where=types == int(EventType.PURCHASE)) < width
        intent = ((types == int(EventType.CART)) | (types == int(EventType.FAV))) & ~bought_later
        # tier (2 = open cart, 1 = seen) plus recency in (0, 1): the item keeps its best position
        recency = self.config.decay ** torch.arange(width - 1, -1, -1, dtype=torch.float64)
        key = (1.0 + intent.double() + 0.5 * recency) * (items > 0)
        scores = torch.zeros(len(items), self.n_items + 1, dtype=torch.float64).scatter_reduce_(
            1, items, key, reduce="amax")
        scores += 0.5 * torch.from_numpy(pop)[None, :]  # below every history item (keys >= 1)
        scores[:, 0] = 0.0
        return scores.to(torch.float32)
