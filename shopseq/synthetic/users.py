"""Planted shopper types and the per-user latent state (type, activity, tastes, drift, favourite brand)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopseq.synthetic.catalogue import Catalogue
from shopseq.synthetic.config import SyntheticShopConfig, UserTypeProfile

MAX_TASTE = 6  # taste slots per user; types use the first ``taste_size`` of them


class TypeTable:
    """The profiles as arrays indexed by type code, so ``table["p_cart"][types]`` is a vector lookup."""

    def __init__(self, profiles: dict[str, UserTypeProfile]) -> None:
        self.names = list(profiles)
        self.arrays = {
            field: np.array([getattr(p, field) for p in profiles.values()], dtype=np.float64)
            for field in UserTypeProfile.model_fields
        }
        share = self.arrays["share"]
        self.share_cum = np.cumsum(share / share.sum())

    def __getitem__(self, field: str) -> np.ndarray:
        return self.arrays[field]


@dataclass
class UserBlock:
    """Latent state of a contiguous block of users (one generation chunk)."""

    index: np.ndarray  # (U,) global user index
    type: np.ndarray  # (U,) int16 type code
    activity: np.ndarray  # (U,) log-normal multiplier on sessions, mean 1
    taste_a: np.ndarray  # (U, MAX_TASTE) home categories at the start of the log
    taste_a_cum: np.ndarray  # (U, MAX_TASTE) cumulative slot weights
    taste_b: np.ndarray  # (U, MAX_TASTE) categories the user drifts towards
    taste_b_cum: np.ndarray
    drift: np.ndarray  # (U,) share of sessions from taste_b at the end of the log
    fav_brand: np.ndarray  # (U,) int32

    def __len__(self) -> int:
        return len(self.index)


def _taste(cat: Catalogue, anchor: np.ndarray, cum_w: np.ndarray, size: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Taste slots around an anchor category: half follow the category chain (coherent tastes such as
    phones + phone accessories), half are popularity draws. Slot weights are Dirichlet, largest first."""
    n = len(anchor)
    cats = np.empty((n, MAX_TASTE), dtype=np.int32)
    cats[:, 0] = anchor
    for s in range(1, MAX_TASTE):
        chained = cat.next_category(anchor, rng.random(n))
        drawn = np.minimum(np.searchsorted(cum_w, rng.random(n), side="right"), cat.n_categories - 1)
        cats[:, s] = np.where(rng.random(n) < 0.5, chained, drawn)
    w = rng.gamma(1.0, size=(n, MAX_TASTE)) * (np.arange(MAX_TASTE) < size[:, None])
    w = -np.sort(-w, axis=1)
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    return cats, cum


def build_users(config: SyntheticShopConfig, cat: Catalogue, types: TypeTable, first: int, n: int,
                rng: np.random.Generator) -> UserBlock:
    t = np.searchsorted(types.share_cum, rng.random(n), side="right")
    t = np.minimum(t, len(types.names) - 1).astype(np.int16)
    sigma = config.activity_sigma
    activity = rng.lognormal(-sigma * sigma / 2, sigma, n)

    taste_a = np.empty((n, MAX_TASTE), dtype=np.int32)
    taste_b = np.empty_like(taste_a)
    cum_a = np.empty((n, MAX_TASTE))
    cum_b = np.empty_like(cum_a)
    size = types["taste_size"][t].astype(np.int64)
    for code in range(len(types.names)):
        rows = np.flatnonzero(t == code)
        if len(rows) == 0:
            continue
        # Restockers gravitate to categories full of consumables.
        w = cat.category_pop**0.7 * (1.0 + types["consumable_affinity"][code] * cat.category_consumable_share)
        cum_w = np.cumsum(w / w.sum())
        m = len(rows)
        anchor_a = np.minimum(np.searchsorted(cum_w, rng.random(m), side="right"), cat.n_categories - 1)
        taste_a[rows], cum_a[rows] = _taste(cat, anchor_a, cum_w, size[rows], rng)
        # The drift target is a neighbour of the home category half the time (a life-stage
        # trajectory such as Baby > Strollers -> Toys), otherwise somewhere new.
        drawn = np.minimum(np.searchsorted(cum_w, rng.random(m), side="right"), cat.n_categories - 1)
        anchor_b = np.where(rng.random(m) < 0.5, cat.next_category(anchor_a, rng.random(m)), drawn)
        taste_b[rows], cum_b[rows] = _taste(cat, anchor_b, cum_w, size[rows], rng)

    drift = np.clip(types["drift"][t] * rng.uniform(0.5, 1.5, n), 0.0, 1.0)
    fav_brand = cat.item_brand[cat.sample_in_category(taste_a[:, 0], rng.random(n))]
    return UserBlock(index=np.arange(first, first + n, dtype=np.int64), type=t, activity=activity,
                     taste_a=taste_a, taste_a_cum=cum_a, taste_b=taste_b, taste_b_cum=cum_b, drift=drift,
                     fav_brand=fav_brand.astype(np.int32))
