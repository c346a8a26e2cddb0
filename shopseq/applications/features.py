"""Per-user features as of a cut time, vectorised over events (bincounts, no loop over users).

``activity_features``: recency, frequency, monetary and activity counts (RFM and friends) — the
inputs of intent, churn and the RFM baselines. ``behaviour_features``: how a user shops (funnel
rates, basket habits, price level, brand loyalty, exploration), the inputs of segmentation.
``affinities``: recency-weighted category / brand shares, sparse, top-n per user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopseq.applications.data import DAY_MS, AppData
from shopseq.data.schema import EventType

VIEW, CART, FAV, PURCHASE, REVIEW = (int(t) for t in EventType)
SESSION_GAP_MS = 30 * 60_000  # the usual web-analytics session timeout
# how much an event says about a user's interest in its item (commitment ladder)
AFFINITY_WEIGHTS = {VIEW: 1.0, CART: 3.0, FAV: 2.0, PURCHASE: 5.0, REVIEW: 1.0}


@dataclass
class UserFeatures:
    names: list[str]
    values: np.ndarray  # float64 (n_users, len(names))

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def select(self, rows: np.ndarray) -> UserFeatures:
        return UserFeatures(self.names, self.values[rows])


@dataclass
class _Events:
    """Events before the cut, flattened with their user index."""

    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray
    n_users: int

    def count(self, mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        u = self.user if mask is None else self.user[mask]
        w = None if weights is None else (weights if mask is None else weights[mask])
        return np.bincount(u, weights=w, minlength=self.n_users).astype(np.float64)


def _events_before(data: AppData, cut_ms: int) -> _Events:
    seqs = data.seqs
    keep = np.asarray(seqs.timestamps) < cut_ms
    return _Events(seqs.event_users()[keep], np.asarray(seqs.items, dtype=np.int64)[keep],
                   np.asarray(seqs.event_types)[keep], np.asarray(seqs.timestamps)[keep], seqs.n_users)


def _session_starts(ev: _Events) -> np.ndarray:
    """True where an event opens a session (first of its user, or after a long pause)."""
    n = len(ev.user)
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = (ev.user[1:] != ev.user[:-1]) | (ev.ts[1:] - ev.ts[:-1] > SESSION_GAP_MS)
    return starts


def _last_per_user(ev: _Events, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(ev.n_users, fill, dtype=np.float64)
    if len(ev.user):
        last = np.r_[ev.user[1:] != ev.user[:-1], True]  # events are sorted by (user, time)
        out[ev.user[last]] = values[last]
    return out


def _first_per_user(ev: _Events, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full(ev.n_users, fill, dtype=np.float64)
    if len(ev.user):
        first = np.r_[True, ev.user[1:] != ev.user[:-1]]
        out[ev.user[first]] = values[first]
    return out


ACTIVITY_NAMES = [
    "recency_days", "tenure_days", "events", "events_7d", "events_30d", "sessions", "sessions_30d",
    "active_days_30d", "purchases", "purchases_30d", "carts_30d", "monetary",
]


def activity_features(data: AppData, cut_ms: int) -> UserFeatures:
    """RFM and activity counts from the events before ``cut_ms``. Users without events get
    recency = tenure = the length of the data before the cut, and zero counts. ``monetary`` sums
    the list prices of purchased items (0 without prices)."""
    ev = _events_before(data, cut_ms)
    span_days = max((cut_ms - data.start_ms) / DAY_MS, 1e-9)
    age_days = (cut_ms - ev.ts) / DAY_MS
    last7, last30 = age_days <= 7, age_days <= 30
    bought = ev.etype == PURCHASE
    starts = _session_starts(ev)
    day = ev.ts // DAY_MS
    new_day = np.r_[True, (ev.user[1:] != ev.user[:-1]) | (day[1:] != day[:-1])] if len(day) else starts
    price = np.nan_to_num(data.items.price[ev.item], nan=0.0)
    cols = {
        "recency_days": _last_per_user(ev, age_days, span_days),
        "tenure_days": _first_per_user(ev, age_days, span_days),
        "events": ev.count(),
        "events_7d": ev.count(last7),
        "events_30d": ev.count(last30),
        "sessions": ev.count(starts),
        "sessions_30d": ev.count(starts & last30),
        "active_days_30d": ev.count(new_day & last30),
        "purchases": ev.count(bought),
        "purchases_30d": ev.count(bought & last30),
        "carts_30d": ev.count((ev.etype == CART) & last30),
        "monetary": ev.count(bought, weights=price),
    }
    return UserFeatures(ACTIVITY_NAMES, np.column_stack([cols[n] for n in ACTIVITY_NAMES]))


def activity_design(values: np.ndarray) -> np.ndarray:
    """Model-ready activity features: log of counts and durations (heavy-tailed otherwise)."""
    return np.log1p(np.maximum(values, 0.0))


def _smoothed_rate(num: np.ndarray, den: np.ndarray, strength: float = 5.0) -> np.ndarray:
    """Empirical-Bayes shrinkage towards the population rate: short histories say little."""
    prior = num.sum() / max(den.sum(), 1e-9)
    return (num + strength * prior) / (den + strength)


def _user_mean(ev: _Events, values: np.ndarray, mask: np.ndarray, strength: float = 5.0) -> np.ndarray:
    """Per-user mean of ``values`` over ``mask`` events, shrunk towards the population mean."""
    return _smoothed_rate(ev.count(mask, weights=np.where(mask, values, 0.0)), ev.count(mask), strength)


def _top_share(ev: _Events, codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: share of events on their most frequent code, and number of distinct codes."""
    ok = codes >= 0
    key = ev.user[ok].astype(np.int64) * max(n_codes, 1) + codes[ok]
    uniq, counts = np.unique(key, return_counts=True)
    users = uniq // max(n_codes, 1)
    top = np.zeros(ev.n_users)
    if len(users):
        np.maximum.at(top, users, counts)
    distinct = np.bincount(users, minlength=ev.n_users).astype(np.float64)
    total = ev.count(ok)
    return np.where(total > 0, top / np.maximum(total, 1), 0.0), distinct


BEHAVIOUR_NAMES = [
    "log_events", "views_per_session", "cart_rate", "fav_rate", "buy_per_cart", "review_rate",
    "price_index", "brand_share", "item_popularity", "repeat_purchase_share", "category_spread",
    "sessions_per_week",
]


def behaviour_features(data: AppData, cut_ms: int) -> UserFeatures:
    """How each user shops, from the events before ``cut_ms`` (rates shrunk towards the population
    rate, so a user with three events is not an extreme). Constant columns (no prices, no brands)
    carry no information and are harmless: standardisation maps them to 0."""
    ev = _events_before(data, cut_ms)
    items = data.items
    views, carts, favs = (ev.etype == t for t in (VIEW, CART, FAV))
    bought, reviews = ev.etype == PURCHASE, ev.etype == REVIEW
    n_views, n_carts, n_buys = ev.count(views), ev.count(carts), ev.count(bought)
    sessions = ev.count(_session_starts(ev))

    # price level: log(price / median price of the item's category), averaged over viewed items
    cat = items.category[ev.item]
    price = items.price[ev.item]
    has_price = np.isfinite(price) & (price > 0) & (cat >= 0)
    rel_price = np.zeros(len(ev.item))
    if has_price.any():
        med = np.full(max(items.n_categories, 1), np.nan)
        item_cat, item_price = items.category[1:], items.price[1:]
        ok = np.isfinite(item_price) & (item_price > 0) & (item_cat >= 0)
        order = np.lexsort((item_price[ok], item_cat[ok]))
        sc, sp = item_cat[ok][order], item_price[ok][order]
        bounds = np.searchsorted(sc, np.arange(items.n_categories + 1))
        mid_lo, mid_hi = (bounds[:-1] + bounds[1:] - 1) // 2, (bounds[:-1] + bounds[1:]) // 2
        present = bounds[1:] > bounds[:-1]
        med[present] = (sp[mid_lo[present]] + sp[np.minimum(mid_hi[present], len(sp) - 1)]) / 2
        rel_price[has_price] = np.log(price[has_price] / med[cat[has_price]])
    # popularity of what the user looks at: log event count of the item (explorers go to the tail)
    item_pop = np.log1p(np.bincount(np.asarray(data.seqs.items, dtype=np.int64), minlength=len(items.category)))

    # repeat purchases: purchases of an item the user had bought before (restocking)
    key = ev.user[bought].astype(np.int64) * len(items.category) + ev.item[bought]
    _, first_idx = np.unique(key, return_index=True)
    repeat = np.ones(int(bought.sum()), dtype=bool)
    repeat[first_idx] = False
    n_repeat = np.bincount(ev.user[bought][repeat], minlength=ev.n_users).astype(np.float64)

    brand_share, _ = _top_share(ev, items.brand[ev.item], items.n_brands)
    _, n_cats = _top_share(ev, cat, items.n_categories)
    tenure_weeks = np.maximum(activity_span_days(ev) / 7.0, 1.0)
    cols = {
        "log_events": np.log1p(ev.count()),
        "views_per_session": np.log1p(_smoothed_rate(n_views, sessions)),
        "cart_rate": _smoothed_rate(n_carts, n_views, 20.0),
        "fav_rate": _smoothed_rate(ev.count(favs), n_views, 20.0),
        "buy_per_cart": _smoothed_rate(n_buys, n_carts),
        "review_rate": _smoothed_rate(ev.count(reviews), n_buys),
        "price_index": _user_mean(ev, rel_price, views & has_price),
        "brand_share": _smoothed_rate(brand_share * ev.count(), ev.count()),
        "item_popularity": _user_mean(ev, item_pop[ev.item], views),
        "repeat_purchase_share": _smoothed_rate(n_repeat, n_buys),
        "category_spread": _smoothed_rate(n_cats, ev.count()),
        "sessions_per_week": np.log1p(sessions / tenure_weeks),
    }
    return UserFeatures(BEHAVIOUR_NAMES, np.column_stack([cols[n] for n in BEHAVIOUR_NAMES]))


def activity_span_days(ev: _Events) -> np.ndarray:
    """Days between each user's first and last event before the cut."""
    return (_last_per_user(ev, ev.ts.astype(np.float64), 0.0) - _first_per_user(ev, ev.ts.astype(np.float64), 0.0)) \
        / DAY_MS


def _interest_weights(ev: _Events, cut_ms: int, half_life_days: float) -> np.ndarray:
    """Event weight = commitment of its type x 0.5 ** (age / half-life)."""
    type_w = np.zeros(max(AFFINITY_WEIGHTS) + 1)
    for t, w in AFFINITY_WEIGHTS.items():
        type_w[t] = w
    return type_w[ev.etype] * 0.5 ** ((cut_ms - ev.ts) / (half_life_days * DAY_MS))


def interest_share(data: AppData, cut_ms: int, item_mask: np.ndarray, half_life_days: float = 30.0) -> np.ndarray:
    """Per user: share of their recency-weighted events (before the cut) on items of ``item_mask``."""
    ev = _events_before(data, cut_ms)
    w = _interest_weights(ev, cut_ms, half_life_days)
    num = ev.count(weights=w * np.asarray(item_mask, dtype=np.float64)[ev.item])
    den = ev.count(weights=w)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)


@dataclass
class Affinities:
    """Sparse recency-weighted shares: for each user the top codes (categories or brands)."""

    offsets: np.ndarray  # int64 (n_users + 1,)
    codes: np.ndarray  # int64
    shares: np.ndarray  # float64, in (0, 1], sum <= 1 per user
    totals: np.ndarray  # float64 (n_codes,): sum of the users' full shares per code


def affinities(data: AppData, cut_ms: int, item_code: np.ndarray, n_codes: int, top_n: int = 3,
               half_life_days: float = 30.0) -> Affinities:
    """Per user the ``top_n`` codes by share of recency-weighted events (weight halves every
    ``half_life_days``; carts, favourites and purchases weigh more than views)."""
    ev = _events_before(data, cut_ms)
    codes = np.asarray(item_code, dtype=np.int64)[ev.item]
    weight = _interest_weights(ev, cut_ms, half_life_days)
    ok = codes >= 0
    key = ev.user[ok].astype(np.int64) * max(n_codes, 1) + codes[ok]
    uniq, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weights=weight[ok])
    users, code = uniq // max(n_codes, 1), uniq % max(n_codes, 1)
    share = w / np.maximum(np.bincount(users, weights=w, minlength=ev.n_users)[users], 1e-300)
    totals = np.bincount(code, weights=share, minlength=n_codes)
    order = np.lexsort((code, -share, users))  # per user: largest share first
    users, code, share = users[order], code[order], share[order]
    first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, dtype=bool)
    rank = np.arange(len(users)) - np.maximum.accumulate(np.where(first, np.arange(len(users)), 0))
    keep = rank < top_n
    users, code, share = users[keep], code[keep], share[keep]
    offsets = np.zeros(ev.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=ev.n_users), out=offsets[1:])
    return Affinities(offsets, code, share, totals)
