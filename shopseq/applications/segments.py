"""User segments: k-means (k-means++ seeding, several restarts) in numpy, the number of segments
chosen by the mean silhouette on a sample, and plain-words descriptions of each segment.

What is clustered: standardised behaviour features (how a user shops: funnel rates, price level,
brand loyalty, exploration, ...) and, with weight ``vector_weight``, the model's user vectors
(what a user is into). Model vectors alone encode taste (categories), not shopping style; the
behaviour block is what separates the planted shopper types of the synthetic shop (measured in
tests/test_applications.py and BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class SegmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, ge=1, description="number of segments; None = chosen by the criterion")
    k_min: int = Field(2, ge=2)
    k_max: int = Field(10, ge=2)
    criterion: Literal["silhouette"] = "silhouette"
    sample: int = Field(3000, ge=50, description="users in the silhouette sample (O(n^2) distances)")
    n_init: int = Field(4, ge=1, description="k-means restarts; the lowest inertia wins")
    max_iter: int = Field(100, ge=1)
    vector_weight: float = Field(0.25, ge=0, le=1,
                                 description="share of the total variance given to the model's user vectors")
    min_events: int = Field(3, ge=1, description="users with fewer events get the nearest segment, not a vote")
    fit_sample: int = Field(6000, ge=100, description="k-means is fit on at most this many users, then all assigned")
    seed: int = 0


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d)
    labels: np.ndarray  # int64 (n,)
    inertia: float


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [x[rng.integers(len(x))]]
    closest = _sq_dists(x, centroids[0][None, :])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        idx = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[idx])
        closest = np.minimum(closest, _sq_dists(x, x[idx][None, :])[:, 0])
    return np.stack(centroids)


def kmeans(x: np.ndarray, k: int, n_init: int = 4, max_iter: int = 100, seed: int = 0) -> KMeansResult:
    """Lloyd's algorithm from k-means++ starts; the best of ``n_init`` runs by inertia."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"cannot make {k} segments of {len(x)} users")
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        c = _kmeans_pp(x, k, rng)
        labels = np.full(len(x), -1)
        for _ in range(max_iter):
            new = _sq_dists(x, c).argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            sums = np.zeros_like(c)
            np.add.at(sums, labels, x)
            empty = counts == 0
            c = np.where(empty[:, None], c, sums / np.maximum(counts, 1)[:, None])
            if empty.any():  # re-seed an empty cluster at the point farthest from its centroid
                far = _sq_dists(x, c)[np.arange(len(x)), labels].argsort()[::-1][: int(empty.sum())]
                c[empty] = x[far]
        inertia = float(_sq_dists(x, c)[np.arange(len(x)), labels].sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(c, labels, inertia)
    assert best is not None
    return best


def silhouette(x: np.ndarray, labels: np.ndarray, sample: int = 3000, seed: int = 0) -> float:
    """Mean silhouette (b - a) / max(a, b) over a random sample of points (exact on the sample)."""
    x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
    if len(x) > sample:
        pick = np.random.default_rng(seed).choice(len(x), sample, replace=False)
        x, labels = x[pick], labels[pick]
    k = int(labels.max()) + 1
    if k < 2:
        return 0.0
    d = np.sqrt(_sq_dists(x, x))
    onehot = np.eye(k)[labels]
    sums = d @ onehot  # (n, k) summed distance to each cluster
    sizes = onehot.sum(0)
    own = labels
    a = sums[np.arange(len(x)), own] / np.maximum(sizes[own] - 1, 1)
    other = sums / np.maximum(sizes, 1)[None, :]
    other[np.arange(len(x)), own] = np.inf
    other[:, sizes == 0] = np.inf
    b = other.min(1)
    s = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-scores (constant columns -> 0), with the mean and scale used."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0) if len(x) else np.zeros(x.shape[1])
    std = x.std(0) if len(x) else np.ones(x.shape[1])
    std = np.where(std > 1e-12, std, np.inf)
    return (x - mean) / std, mean, std


def segment_space(behaviour: np.ndarray, vectors: np.ndarray | None, vector_weight: float) -> np.ndarray:
    """Concatenate the standardised blocks so the vector block holds ``vector_weight`` of the
    total variance (each block's variance is the number of its non-constant columns)."""
    b, _, _ = standardise(behaviour)
    if vectors is None or vector_weight <= 0 or vectors.shape[1] == 0:
        return b
    v, _, _ = standardise(vectors)
    vb, vv = max(float(b.var(0).sum()), 1e-12), max(float(v.var(0).sum()), 1e-12)
    if vector_weight >= 1:
        return v
    scale = np.sqrt(vector_weight / (1 - vector_weight) * vb / vv)
    return np.hstack([b, v * scale])


@dataclass
class Segmentation:
    k: int
    labels: np.ndarray  # int64 per user (all users, in the order given)
    centroids: np.ndarray
    criterion: str
    scores: dict[int, float] = field(default_factory=dict)  # criterion value per tried k

    def describe_choice(self) -> str:
        if not self.scores:
            return f"{self.k} segments (fixed)"
        tried = ", ".join(f"k={k}: {s:.3f}" for k, s in self.scores.items())
        return f"{self.k} segments, chosen by the highest mean {self.criterion} ({tried})"


def segment_users(x: np.ndarray, config: SegmentConfig, fit_rows: np.ndarray | None = None) -> Segmentation:
    """Cluster the rows of ``x`` (already in segment space). k-means is fit on ``fit_rows``
    (default all) and every row gets its nearest centroid."""
    fit_rows = np.arange(len(x)) if fit_rows is None else np.asarray(fit_rows)
    if len(fit_rows) < max(config.k or 0, config.k_min + 1):
        fit_rows = np.arange(len(x))  # too few users with long histories: use everyone
    if len(fit_rows) > config.fit_sample:
        fit_rows = np.sort(np.random.default_rng(config.seed).choice(fit_rows, config.fit_sample, replace=False))
    fit = x[fit_rows]
    scores: dict[int, float] = {}
    if config.k is not None:
        k = min(config.k, len(fit))
        result = kmeans(fit, k, config.n_init, config.max_iter, config.seed)
    else:
        best: tuple[float, int, KMeansResult] | None = None
        for k in range(config.k_min, min(config.k_max, len(fit) - 1) + 1):
            result = kmeans(fit, k, config.n_init, config.max_iter, config.seed)
            scores[k] = silhouette(fit, result.labels, config.sample, config.seed)
            if best is None or scores[k] > best[0]:
                best = (scores[k], k, result)
        if best is None:
            raise ValueError(f"too few users ({len(fit)}) to choose a number of segments")
        _, k, result = best
    labels = _sq_dists(x, result.centroids).argmin(1)
    return Segmentation(k, labels, result.centroids, config.criterion, scores)


def describe_segments(values: np.ndarray, names: list[str], labels: np.ndarray, k: int,
                      phrases: dict[str, tuple[str, str]] | None = None, top: int = 3) -> list[str]:
    """One sentence per segment: the features whose segment mean departs most from the overall
    mean, in standard deviations, worded with ``phrases[name] = (when high, when low)``."""
    phrases = phrases or {}
    z, _, _ = standardise(values)
    out = []
    for s in range(k):
        members = labels == s
        if not members.any():
            out.append("empty")
            continue
        m = z[members].mean(0)
        order = np.argsort(-np.abs(m))[:top]
        words = []
        for j in order:
            high, low = phrases.get(names[j], (f"high {names[j]}", f"low {names[j]}"))
            words.append(f"{high if m[j] > 0 else low} ({m[j]:+.1f} sd)")
        out.append("; ".join(words))
    return out
