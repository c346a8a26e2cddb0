"""Full-ranking evaluation of a ``Recommender`` on an ``EvalSet``, in chunks of users.

Protocol (per chunk of ``chunk_users`` evaluated users, taken in order of history length so that
each chunk's histories pad only to their own longest one):

1. ``Histories.from_eval_set(eval_set, model.max_len, rows)`` -> ``model.score`` -> a float32
   (B, n_items + 1) matrix that the evaluator owns (the ``score`` contract; a view is copied).
2. Column 0 (padding) is set to ``-inf``. With ``filter_seen`` every item of the user's **full**
   history (all of the EvalSet's history events, not only the ``max_len`` the model read) is set
   to ``-inf`` too. This is the published protocol (SASRec / S3-Rec leave-one-out, most session
   papers): a target that is already in the history then becomes *unreachable* and counts as a
   miss — on repeat-heavy data (views, restocks) use ``filter_seen=False`` or read the
   ``repeat_*`` / ``new_*`` breakdown, which shows exactly what the masking costs.
3. Each target's rank is the number of other items scored ``>=`` it (ties pessimistic, see
   :mod:`shopseq.evaluation.metrics`), so a constant scorer gets nothing; ``torch.topk`` gives
   the top-k lists used for catalogue coverage. ``exact_ranks=False`` (validation while
   training) counts ranks inside the top max(ks) only: every metric at a cut-off is unchanged,
   uncut MRR is left out, and the full comparison pass is skipped.

Targets: ``target="next"`` ranks the first target event of each user (the next-item protocol);
``target="all"`` ranks the set of distinct target items of the window (for time splits), with
recall = hits / |T|, precision = hits / k and NDCG with binary relevance over the set.

``sampled_negatives=N`` switches to the (optimistic, only-for-comparison) sampled protocol: each
target is ranked among N items drawn uniformly without replacement from the items that are
neither in the user's history nor among its targets, with a fixed seed (one torch generator per
chunk, seeded ``seed`` + the chunk's start, so results depend on ``seed`` and the chunk size only:
``chunk_users``, lowered where ``max_score_mb`` bounds the score matrix of a large catalogue).
Metric names then carry the prefix ``sampled_`` so they can never be mistaken for full-ranking
numbers; coverage is not reported. ``filter_seen`` still decides whether a target found in the
history is reachable (``filter_seen=False`` is SASRec's original sampled protocol).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopseq.data.splits import EvalSet
from shopseq.evaluation.metrics import (
    coverage,
    per_target_metrics,
    per_user_metrics,
    ranks_within_top,
    target_ranks,
    top_k,
)
from shopseq.models.base import Histories, Recommender

__all__ = ["EvalConfig", "EvalResult", "evaluate", "target_pairs"]


class EvalConfig(BaseModel):
    """How to evaluate; the defaults are the honest full-ranking next-item protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ks: tuple[int, ...] = (10, 20)
    filter_seen: bool = True
    # 512: the chunk's score matrix (25 MB on Beauty) stays in cache for the masking, ranking and
    # top-k passes after the product; Beauty validation 4.1 s at 2,048 -> 3.2 s at 512 (1 thread)
    chunk_users: int = Field(512, ge=1, description="users scored at once (in order of history length)")
    max_score_mb: int = Field(512, ge=1, description="bound on one chunk's (users x items) score matrix; "
                              "with a million items, chunks shrink to ~128 users")
    target: Literal["next", "all"] = "next"
    sampled_negatives: int | None = Field(None, ge=1)
    seed: int = 0
    head: Literal["item", "purchase"] = Field("item", description="score with the next-item or next-purchase head")
    exact_ranks: bool = Field(True, description="False: ranks only inside the top max(ks) (metrics at k are "
                              "unchanged, uncut MRR is dropped); ~20% faster, for validation while training")

    @field_validator("ks")
    @classmethod
    def _check_ks(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or min(ks) < 1:
            raise ValueError("ks must hold at least one cut-off, all >= 1")
        return tuple(sorted(set(ks)))

    def protocol(self) -> str:
        """A short human description, printed beside every number."""
        parts = [f"sampled ranking vs {self.sampled_negatives} random items" if self.sampled_negatives
                 else "full ranking"]
        parts.append("seen items filtered" if self.filter_seen else "seen items kept")
        if self.target == "all":
            parts.append("all window items as targets")
        if self.head == "purchase":
            parts.append("next-purchase scores")
        return ", ".join(parts)


@dataclass
class EvalResult:
    """Mean metrics over evaluated users, with the settings that produced them.

    ``per_user`` holds aligned per-user arrays (``user``: the EvalSet's user index; ``rank``: best
    target rank, ``inf`` if unreachable; one array per metric) for paired significance tests.
    """

    metrics: dict[str, float]
    n_users: int
    n_targets: int
    seconds: float
    config: EvalConfig
    filter_seen: bool
    model: str = ""
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def headline(self) -> str:
        prefix = "sampled_" if self.config.sampled_negatives else ""
        keys = [f"{prefix}{m}@{k}" for k in self.config.ks for m in ("ndcg", "hr")] + [f"{prefix}mrr"]
        return " · ".join(f"{k} {self.metrics[k]:.4f}" for k in keys if k in self.metrics)

    def describe(self) -> str:
        """Headline numbers with the protocol and user count beside them, then every metric."""
        who = f"{self.model}: " if self.model else ""
        users = f"{self.n_users:,} user{'' if self.n_users == 1 else 's'}"
        lines = [f"{who}{self.headline()} ({users}, {self.config.protocol()})"]
        groups: dict[str, list[str]] = {}
        for key, value in self.metrics.items():
            groups.setdefault(key.split("@")[0], []).append(f"{key} {value:.4f}")
        lines += [f"  {' · '.join(v)}" for v in groups.values()]
        lines.append(f"  {self.n_targets:,} targets, {self.seconds:.2f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-user arrays)."""
        return {"model": self.model, "metrics": self.metrics, "n_users": self.n_users,
                "n_targets": self.n_targets, "seconds": self.seconds, "filter_seen": self.filter_seen,
                "config": self.config.model_dump(mode="json")}


def target_pairs(eval_set: EvalSet, target: Literal["next", "all"], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, items)``: CSR target items per evaluated user — the first target event, or the
    sorted distinct target items."""
    n = eval_set.n_users
    if target == "next":
        return np.arange(n + 1, dtype=np.int64), eval_set.next_items().astype(np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), eval_set.target_lengths())
    keys = np.unique(rows * (n_items + 1) + eval_set.target_items.astype(np.int64))
    counts = np.bincount(keys // (n_items + 1), minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, keys % (n_items + 1)


def _rows_of(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR ``offsets`` and selected ``rows``: each element's position in ``rows`` and its flat
    index, row after row (the rows' ranges concatenated, without a Python loop)."""
    starts, counts = offsets[rows].astype(np.int64), np.diff(offsets)[rows].astype(np.int64)
    local = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts  # where each row's run begins in the output
    return local, np.repeat(starts - first, counts) + np.arange(int(counts.sum()), dtype=np.int64)


def _in_history(eval_set: EvalSet, offsets: np.ndarray, items: np.ndarray, pair_rows: np.ndarray,
                width: int) -> np.ndarray:
    """bool per (user, target) pair: is the target among the user's history items?"""
    h_lengths = eval_set.history_lengths()
    h_rows = np.repeat(np.arange(eval_set.n_users, dtype=np.int64), h_lengths)
    if len(items) == eval_set.n_users and np.array_equal(np.diff(offsets), np.ones(len(items), dtype=np.int64)):
        # one target per user: compare each history event with its user's target (no hashing)
        hits = eval_set.history_items.astype(np.int64) == items[h_rows]
        return np.bincount(h_rows[hits], minlength=eval_set.n_users) > 0
    return np.isin(pair_rows * width + items, h_rows * width + eval_set.history_items.astype(np.int64))


def evaluate(model: Recommender, eval_set: EvalSet, config: EvalConfig | None = None) -> EvalResult:
    """Rank every item of the catalogue for every evaluated user and average the metrics."""
    config = config or EvalConfig()
    t0 = time.perf_counter()
    n_items, n_users, ks = model.n_items, eval_set.n_users, config.ks
    width = n_items + 1
    for what, arr in (("target", eval_set.target_items), ("history", eval_set.history_items)):
        top_item = int(arr.max()) if len(arr) else 0
        if top_item > n_items:
            raise ValueError(f"eval set has {what} item index {top_item} but the model knows {n_items} items "
                             f"(was it trained on another item vocabulary?)")

    offsets, items = target_pairs(eval_set, config.target, n_items)
    pair_rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(offsets))
    is_repeat = _in_history(eval_set, offsets, items, pair_rows, width)
    ranks = np.full(len(items), np.inf)
    recommended = {k: np.zeros(width, dtype=bool) for k in ks}
    n_top = min(max(ks), n_items)
    h_off = eval_set.history_offsets
    score = model.score_purchase if config.head == "purchase" else model.score

    # float32 scores plus our masked copy: bound the pair of (chunk x width) matrices
    chunk_users = max(1, min(config.chunk_users, config.max_score_mb * 2**20 // (8 * width)))
    # a target's rank beyond max(ks) matters only to uncut MRR: skip that full comparison on request
    top_only = not config.exact_ranks and config.target == "next" and not config.sampled_negatives
    # users in order of history length: each chunk's histories pad only to its own longest one
    order = np.argsort(np.minimum(np.diff(h_off), model.max_len), kind="stable")
    with torch.no_grad(), torch.inference_mode():
        for start in range(0, n_users, chunk_users):
            rows = order[start:start + chunk_users]
            n = len(rows)
            scores = score(Histories.from_eval_set(eval_set, model.max_len, rows))
            if tuple(scores.shape) != (n, width):
                raise ValueError(f"{type(model).__name__}.score returned shape {tuple(scores.shape)}, "
                                 f"expected {(n, width)}")
            # we write -inf into it: the contract makes it ours, but a view would reach into the model
            scores = scores.detach().to(device="cpu", dtype=torch.float32, copy=scores._base is not None)
            scores[:, 0] = -torch.inf
            h_rows, h_index = _rows_of(h_off, rows)
            h_rows_t = torch.from_numpy(h_rows)
            h_items = torch.from_numpy(eval_set.history_items[h_index].astype(np.int64))
            if config.filter_seen and len(h_index):
                scores[h_rows_t, h_items] = -torch.inf  # the full history, not only the last max_len events

            p_rows, p_index = _rows_of(offsets, rows)
            p_rows_t = torch.from_numpy(p_rows)
            p_items = torch.from_numpy(items[p_index])
            if config.sampled_negatives:
                cand = _sample_negatives(n, width, h_rows_t, h_items, p_rows_t, p_items,
                                         config.sampled_negatives, config.seed + start)
                ranks[p_index] = target_ranks(scores, p_rows_t, p_items, candidates=cand)
            else:
                values, indices = top_k(scores, n_top)
                if top_only:
                    ranks[p_index] = ranks_within_top(scores, values, p_rows_t, p_items)
                else:
                    ranks[p_index] = target_ranks(scores, p_rows_t, p_items)
                for k in ks:
                    top = indices[:, :k][values[:, :k] > -torch.inf]  # not masked / padding items
                    recommended[k][top.numpy()] = True

    per_user = per_user_metrics(ranks, offsets, ks)
    unknown = ("rank", "n_targets", "mrr") if top_only else ("rank", "n_targets")
    metrics = {key: float(np.mean(per_user[key])) if n_users else float("nan")
               for key in per_user if key not in unknown}
    metrics.update(per_target_metrics(ranks, is_repeat, ks))
    if config.sampled_negatives:
        metrics = {f"sampled_{k}": v for k, v in metrics.items()}
    else:
        metrics.update({f"coverage@{k}": coverage(recommended[k], n_items) for k in ks})
    per_user["user"] = eval_set.users
    per_user["repeat_share"] = (np.bincount(pair_rows, weights=is_repeat, minlength=n_users)
                                / np.maximum(np.diff(offsets), 1))
    return EvalResult(
        metrics=_ordered(metrics), n_users=n_users, n_targets=len(items), seconds=time.perf_counter() - t0,
        config=config, filter_seen=config.filter_seen, model=getattr(model, "name", ""), per_user=per_user,
    )


def _sample_negatives(n_rows: int, width: int, h_rows: torch.Tensor, h_items: torch.Tensor, p_rows: torch.Tensor,
                      p_items: torch.Tensor, n_neg: int, seed: int) -> torch.Tensor:
    """Bool (n_rows, width) marks of ``n_neg`` distinct uniform items per row, never padding, the
    row's history or its targets (fewer when not enough items remain)."""
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(n_rows, width, generator=gen)
    keys[:, 0] = 2.0  # excluded items get a key above every random one
    keys[h_rows, h_items] = 2.0
    keys[p_rows, p_items] = 2.0
    chosen_keys, chosen = torch.topk(keys, min(n_neg, width), dim=1, largest=False)
    cand = torch.zeros(n_rows, width, dtype=torch.bool)
    cand.scatter_(1, chosen, chosen_keys < 2.0)
    return cand


_FAMILY_ORDER = ("ndcg", "hr", "recall", "mrr", "precision", "f1", "coverage", "repeat_share", "repeat_ndcg",
                 "repeat_hr", "new_ndcg", "new_hr")


def _ordered(metrics: dict[str, float]) -> dict[str, float]:
    """Stable, readable key order: by metric family, then cut-off."""
    def key(name: str) -> tuple[int, int]:
        base, _, k = name.removeprefix("sampled_").partition("@")
        rank = _FAMILY_ORDER.index(base) if base in _FAMILY_ORDER else len(_FAMILY_ORDER)
        return rank, int(k) if k else 0
    return dict(sorted(metrics.items(), key=lambda kv: key(kv[0])))
