"""Bottom-up demand from each user's own purchase history (the behaviour part of the forecast).

Two kinds of purchases are told apart, because they are predictable in different ways:

* restocks: repeat purchases of the same item by the same user at the item's typical interval
  (consumables). Items qualify when their repeat gaps are many and tight enough; a user's next
  restock is due at last purchase x interval (log-normal spread), and happens with the user's own
  keep rate (shrunk to the population's), discounted by the chance the chain has already stopped;
* organic purchases: everything else. Per user a recency-weighted purchase rate, shrunk (gamma-
  Poisson) towards the rate the user's recent activity implies, times a category mix shrunk from
  the user's purchases towards their recent events (views show tastes before purchases do), the
  recommender's next-purchase distribution (its purchase head; the next-item distribution for
  models without one) and the population's purchase mix.

All sums are bincounts over event arrays; nothing loops over users or events in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from shopseq.applications.data import DAY_MS, AppData
from shopseq.applications.features import PURCHASE
from shopseq.applications.vectors import group_distribution, weighted_item_mass
from shopseq.models.base import Recommender


class PurchaseHistoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    half_life_days: float = Field(28.0, gt=0, description="recency weighting of purchases and events")
    rate_prior: float = Field(1.0, ge=0, description="pseudo-purchases pulling a user's rate to the activity prior")
    event_weight: float = Field(1.0, ge=0, description="pull of a user's category mix towards their recent events")
    model_weight: float = Field(0.5, ge=0, description="pull of the mix towards the model's next-item distribution")
    population_weight: float = Field(0.5, ge=0, description="pull of the mix towards the population's purchases")
    restock_min_repeats: int = Field(2, ge=1, description="repeat gaps an item needs to count as restocked")
    restock_max_spread: float = Field(0.35, gt=0, description="max robust sd of an item's log repeat gaps")
    keep_prior: float = Field(2.0, ge=0, description="pseudo-opportunities pulling a user's keep rate to the mean")


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def _group_median(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of ``values`` per key in [0, n), count per key); NaN where a key has none."""
    order = np.lexsort((values, keys))
    counts = np.bincount(keys, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo, hi = starts + (counts - 1) // 2, starts + counts // 2
    v = values[order]
    med = np.full(n, np.nan)
    has = counts > 0
    med[has] = (v[lo[has]] + v[hi[has]]) / 2
    return med, counts


@dataclass
class Restocks:
    """Item restock intervals learned from repeat purchases before a cut."""

    log_interval: np.ndarray  # float64 (n_items + 1,), NaN = not a restocked item
    sigma: float  # log-normal spread of the gaps around the item's interval

    @property
    def items(self) -> np.ndarray:
        return np.isfinite(self.log_interval)


def purchases_before(data: AppData, origin_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, ts, index into the events) of the purchases before the origin, sorted by
    (user, item, ts)."""
    ts = np.asarray(data.seqs.timestamps)
    idx = np.flatnonzero((np.asarray(data.seqs.event_types) == PURCHASE) & (ts < origin_ms))
    u, i, t = data.seqs.event_users()[idx], np.asarray(data.seqs.items, dtype=np.int64)[idx], ts[idx]
    order = np.lexsort((t, i, u))
    return u[order], i[order], t[order], idx[order]


def learn_restocks(u: np.ndarray, i: np.ndarray, t: np.ndarray, n_items: int, config: PurchaseHistoryConfig
                   ) -> Restocks:
    same = (u[1:] == u[:-1]) & (i[1:] == i[:-1])
    gap = (t[1:] - t[:-1]) / DAY_MS
    keep = same & (gap >= 1.0)  # two buys within a day are one basket, not a restock
    item, lg = i[1:][keep], np.log(gap[keep])
    med, count = _group_median(item, lg, n_items + 1)
    dev = np.abs(lg - med[item])
    mad, _ = _group_median(item, dev, n_items + 1)
    ok = (count >= config.restock_min_repeats) & (1.4826 * np.nan_to_num(mad, nan=np.inf) <= config.restock_max_spread)
    log_interval = np.where(ok, med, np.nan)
    on = ok[item]
    sigma = float(np.clip(1.4826 * np.median(dev[on]), 0.05, 0.5)) if on.any() else 0.2
    return Restocks(log_interval, sigma)


def restock_demand(data: AppData, origin_ms: int, horizon: int, group: np.ndarray, n_groups: int,
                   config: PurchaseHistoryConfig) -> tuple[np.ndarray, np.ndarray]:
    """(float64 (n_groups, horizon) expected restock purchases per group and day, bool mask over the
    purchases before the origin (in ``_purchases`` order) of those that were restocks)."""
    u, i, t, _ = purchases_before(data, origin_ms)
    out = np.zeros((n_groups, horizon))
    if len(u) == 0:
        return out, np.zeros(0, dtype=bool)
    rs = learn_restocks(u, i, t, data.seqs.n_items, config)
    li = rs.log_interval[i]
    on = np.isfinite(li)
    first = np.r_[True, (u[1:] != u[:-1]) | (i[1:] != i[:-1])]
    last = np.r_[first[1:], True]
    is_restock = on & ~first
    # keep rate: among purchases of restocked items whose next due date is safely past, the share rebought
    margin = np.exp(np.nan_to_num(li) + 2 * rs.sigma) * DAY_MS
    resolved = on & (t + margin < origin_ms)
    rebought = resolved & ~last
    n_users = data.seqs.n_users
    opp = np.bincount(u[resolved], minlength=n_users).astype(np.float64)
    hit = np.bincount(u[rebought], minlength=n_users).astype(np.float64)
    p_mean = hit.sum() / opp.sum() if opp.sum() > 0 else 0.5
    p_keep = (hit + config.keep_prior * p_mean) / (opp + config.keep_prior)
    # pending chains: the last purchase of every (user, restocked item)
    pend = np.flatnonzero(on & last)
    g = group[i[pend]]
    pend, g = pend[g >= 0], g[g >= 0]
    if len(pend) == 0:
        return out, is_restock
    edges = origin_ms + DAY_MS * np.arange(horizon + 1)
    elapsed = np.maximum((edges[None, :] - t[pend, None]) / DAY_MS, 1e-9)
    cdf = _norm_cdf((np.log(elapsed) - li[pend, None]) / rs.sigma)
    p = p_keep[u[pend]][:, None]
    # P(restock on day k | no restock before the origin): the chain may also have stopped already
    alive_and_waiting = p * (1 - cdf[:, :1]) + (1 - p)
    per_day = p * np.diff(cdf, axis=1) / np.maximum(alive_and_waiting, 1e-12)
    cells = (g[:, None] * horizon + np.arange(horizon)[None, :]).ravel()
    out += np.bincount(cells, weights=per_day.ravel(), minlength=n_groups * horizon).reshape(n_groups, horizon)
    return out, is_restock


def organic_rate(model: Recommender, data: AppData, origin_ms: int, group: np.ndarray, n_groups: int,
                 is_restock: np.ndarray, config: PurchaseHistoryConfig, level: str,
                 quiet: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """float64 (n_groups,): expected organic (non-restock) purchases per day from the known users.
    ``quiet``: [start, end) ms intervals (known promotions) left out of the rates and the mix."""
    seqs = data.seqs
    ts = np.asarray(seqs.timestamps)
    before = ts < origin_ms
    users = seqs.event_users()
    hl = config.half_life_days
    for a, b in quiet:
        before &= (ts < a) | (ts >= b)
    w_all = np.where(before, 0.5 ** ((origin_ms - ts) / (DAY_MS * hl)), 0.0)
    g_all = group[np.asarray(seqs.items, dtype=np.int64)]
    # organic purchases: the purchases before the origin minus the restocks
    _, _, _, p_idx = purchases_before(data, origin_ms)
    organic = np.zeros(len(ts), dtype=bool)
    organic[p_idx[~is_restock] if len(is_restock) else p_idx] = True
    n_users = seqs.n_users
    pw = np.bincount(users, weights=np.where(organic, w_all, 0.0), minlength=n_users)
    ew = np.bincount(users, weights=w_all, minlength=n_users)
    # recency-weighted exposure (days) of a user present since the start of the log
    span = max((origin_ms - data.start_ms) / DAY_MS, 1.0)
    exposure = hl / np.log(2) * (1 - 0.5 ** (span / hl))
    for a, b in quiet:  # the recency-weighted days of each quiet interval inside the log
        a_d, b_d = ((origin_ms - np.clip([a, b], data.start_ms, origin_ms)) / DAY_MS).tolist()
        exposure -= hl / np.log(2) * (0.5 ** (b_d / hl) - 0.5 ** (a_d / hl))
    exposure = max(exposure, 1.0)
    rho = pw.sum() / max(ew.sum(), 1e-12)  # purchases per (weighted) event
    prior_rate = rho * ew / exposure
    with np.errstate(divide="ignore"):
        rate = np.where(prior_rate > 0, (pw + config.rate_prior) / (exposure + config.rate_prior / prior_rate),
                        pw / exposure)
    b, m, q = config.event_weight, config.model_weight, config.population_weight
    den = pw + b + m + q
    coef = rate / den  # per user: expected purchases per day per unit of mix mass
    ok = g_all >= 0
    mix = np.bincount(g_all[ok & organic], weights=(coef[users] * w_all)[ok & organic], minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        ev_w = np.where(ew[users] > 0, b * coef[users] * w_all / ew[users], 0.0)
    mix += np.bincount(g_all[ok], weights=ev_w[ok], minlength=n_groups)
    pop = np.bincount(g_all[ok & organic], weights=w_all[ok & organic], minlength=n_groups)
    if pop.sum() > 0:
        mix += q * coef.sum() * pop / pop.sum()
    rows = np.flatnonzero(coef > 0)
    if m > 0 and len(rows):
        past = data.before(origin_ms)
        if level == "category":
            mix += m * (coef[rows, None] * group_distribution(model, past, rows, group, n_groups, purchase=True)).sum(0)
        else:
            mix += m * weighted_item_mass(model, past, rows, coef[rows], purchase=True)[1:]
    return mix


def bottom_up(model: Recommender, data: AppData, origin_ms: int, horizon: int, group: np.ndarray, n_groups: int,
              day_factors: np.ndarray, config: PurchaseHistoryConfig, level: str,
              quiet: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """float64 (n_groups, horizon): restocks at their due dates plus organic purchases at the users'
    rates (without the ``quiet`` events), spread over the days by the (mean-1) day factors of the
    horizon."""
    restock, is_restock = restock_demand(data, origin_ms, horizon, group, n_groups, config)
    organic = organic_rate(model, data, origin_ms, group, n_groups, is_restock, config, level, quiet)
    return restock + organic[:, None] * day_factors[None, :]


__all__ = ["PurchaseHistoryConfig", "Restocks", "bottom_up", "learn_restocks", "purchases_before", "restock_demand"]
