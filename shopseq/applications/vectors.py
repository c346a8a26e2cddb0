"""From a model to per-user quantities: user vectors and next-item probabilities, in user chunks.

The ``Recommender`` contract promises scores ("higher is better"), not probabilities. Neural
models are trained with a softmax over the catalogue, so their softmax *is* their next-item
distribution; the counting baselines score with non-negative counts or probabilities, which are
normalised to sum to one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from shopseq.data.sequences import Sequences
from shopseq.models.base import Histories, Recommender

CHUNK = 2048  # users per forward pass: bounded memory (chunk x catalogue floats)
MAX_VECTOR_DIMS = 64  # wider encodings (a baseline's bag of items) are randomly projected down


def _chunks(rows: np.ndarray, size: int = CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def user_vectors(model: Recommender, seqs: Sequences, rows: np.ndarray, max_dims: int = MAX_VECTOR_DIMS,
                 seed: int = 0) -> np.ndarray:
    """float32 (len(rows), d) user vectors from ``model.encode``; encodings wider than ``max_dims``
    go through a fixed Gaussian random projection (distances kept up to a small distortion)."""
    rows = np.asarray(rows, dtype=np.int64)
    projection: np.ndarray | None = None
    out = []
    for chunk in _chunks(rows):
        v = model.encode(Histories.from_sequences(seqs, model.max_len, chunk)).astype(np.float32)
        if v.shape[1] > max_dims:
            if projection is None:
                rng = np.random.default_rng(seed)
                projection = (rng.standard_normal((v.shape[1], max_dims)) / np.sqrt(max_dims)).astype(np.float32)
            v = v @ projection
        out.append(v)
    if not out:
        return np.zeros((0, max_dims), dtype=np.float32)
    return np.concatenate(out)


def next_item_probs(model: Recommender, histories: Histories, purchase: bool = False) -> torch.Tensor:
    """float32 (B, n_items + 1) next-item distribution (column 0, padding, is 0); with ``purchase``
    the distribution of the next *purchased* item, from the model's purchase head where it has one
    (``score_purchase``; models without one answer with their next-item scores)."""
    from shopseq.models.neural import NeuralRecommender  # lazy: torch models are optional

    with torch.no_grad():
        # the score contract gives the caller the tensor: written in place below, no copy needed
        scores = (model.score_purchase(histories) if purchase else model.score(histories)).float()
        if isinstance(model, NeuralRecommender):
            scores[:, 0] = -torch.inf
            return torch.softmax(scores, dim=1)
        scores[:, 0] = 0.0
        probs = scores.clamp(min=0.0)
        total = probs.sum(dim=1, keepdim=True)
        uniform = torch.full_like(probs, 1.0 / max(model.n_items, 1))
        uniform[:, 0] = 0.0
        return torch.where(total > 0, probs / total.clamp(min=1e-30), uniform)


def iter_next_item_probs(model: Recommender, seqs: Sequences, rows: np.ndarray, purchase: bool = False
                         ) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(positions in rows, probabilities)`` chunk by chunk."""
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        histories = Histories.from_sequences(seqs, model.max_len, chunk)
        yield slice(start, start + len(chunk)), next_item_probs(model, histories, purchase)


def group_distribution(model: Recommender, seqs: Sequences, rows: np.ndarray, item_group: np.ndarray,
                       n_groups: int, purchase: bool = False) -> np.ndarray:
    """float32 (len(rows), n_groups): the next-item distribution summed per group (e.g. category);
    items without a group (-1) are left out."""
    item_group = np.asarray(item_group, dtype=np.int64)
    items = torch.from_numpy(np.flatnonzero(item_group >= 0))
    groups = torch.from_numpy(item_group[items.numpy()])
    out = np.zeros((len(rows), n_groups), dtype=np.float32)
    for where, probs in iter_next_item_probs(model, seqs, rows, purchase):
        summed = torch.zeros(probs.shape[0], n_groups).index_add_(1, groups, probs[:, items])
        out[where] = summed.numpy()
    return out


def weighted_item_mass(model: Recommender, seqs: Sequences, rows: np.ndarray, weights: np.ndarray,
                       purchase: bool = False) -> np.ndarray:
    """float64 (n_items + 1,): sum over users of ``weights[u] * P(next item = i | history u)``."""
    total = torch.zeros(model.n_items + 1, dtype=torch.float64)
    w = torch.from_numpy(np.asarray(weights, dtype=np.float64))
    for where, probs in iter_next_item_probs(model, seqs, rows, purchase):
        total += (w[where][:, None] * probs.double()).sum(dim=0)
    return total.numpy()


def item_set_mass(model: Recommender, seqs: Sequences, rows: np.ndarray, item_mask: np.ndarray) -> np.ndarray:
    """float64 (len(rows),): P(next item is in the set) per user."""
    mask = torch.from_numpy(np.asarray(item_mask, dtype=bool))
    out = np.zeros(len(rows))
    for where, probs in iter_next_item_probs(model, seqs, rows):
        out[where] = probs[:, mask].double().sum(dim=1).numpy()
    return out
