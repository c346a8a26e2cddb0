"""Evaluation metrics of the shop applications, in numpy: ranking (AUC, lift, precision@k),
forecasting (WAPE, MAE), clustering (adjusted Rand index) and calibration (Brier, reliability)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "adjusted_rand_index",
    "auc",
    "brier",
    "expected_calibration_error",
    "lift_at",
    "mae",
    "precision_at_k",
    "reliability_table",
    "wape",
]


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (what the Mann-Whitney U statistic needs)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = avg[group]
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (probability a random positive outranks a random negative; ties
    count half). NaN when only one class is present."""
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(scores)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _top(scores: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of the ``k`` highest scores; ties broken at random (seeded), never by position."""
    s = np.asarray(scores, dtype=np.float64)
    jitter = np.random.default_rng(seed).random(len(s))
    return np.lexsort((jitter, -s))[:k]


def precision_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    y = np.asarray(labels, dtype=bool)
    k = max(1, min(int(k), len(y)))
    return float(y[_top(scores, k)].mean()) if len(y) else float("nan")


def lift_at(labels: np.ndarray, scores: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top ``fraction`` of users divided by the overall positive rate."""
    y = np.asarray(labels, dtype=bool)
    base = y.mean() if len(y) else 0.0
    if base == 0:
        return float("nan")
    k = max(1, round(fraction * len(y)))
    return float(y[_top(scores, k)].mean() / base)


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |a - f| / sum a (NaN when nothing happened)."""
    a, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    total = np.abs(a).sum()
    return float(np.abs(a - f).sum() / total) if total > 0 else float("nan")


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    a, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    return float(np.abs(a - f).mean()) if a.size else float("nan")


def adjusted_rand_index(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Hubert & Arabie's adjusted Rand index of two partitions: 1 = identical, ~0 = chance."""
    a = np.unique(np.asarray(labels_a), return_inverse=True)[1].ravel()
    b = np.unique(np.asarray(labels_b), return_inverse=True)[1].ravel()
    if len(a) != len(b):
        raise ValueError("the two labelings must have the same length")
    n = len(a)
    if n < 2:
        return 1.0
    table = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).astype(np.float64)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    rows = pairs(table.reshape(a.max() + 1, b.max() + 1).sum(axis=1))
    cols = pairs(table.reshape(a.max() + 1, b.max() + 1).sum(axis=0))
    expected = rows * cols / (n * (n - 1) / 2)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else float("nan")


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped away from 0 and 1)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))) if len(y) else float("nan")


def reliability_table(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Per equal-count bin of predicted probability: users, mean prediction, observed rate."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(n_bins, len(p))):
        if len(chunk):
            rows.append({"users": len(chunk), "predicted": float(p[chunk].mean()), "observed": float(y[chunk].mean())})
    return rows


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """User-weighted mean |predicted - observed| over the reliability bins."""
    rows = reliability_table(labels, probs, n_bins)
    total = sum(r["users"] for r in rows)
    return float(sum(r["users"] * abs(r["predicted"] - r["observed"]) for r in rows) / total) if total else float("nan")
