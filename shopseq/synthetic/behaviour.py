"""Shopper behaviour for one block of users, fully vectorised over users, sessions and events.

Order of generation (each step is numpy over the whole block; the only Python loops run over the
session position k, the view step j inside a session, campaigns and repurchase rounds):

1. visits: organic sessions (weekday and hour-of-day seasonality) plus extra campaign visits;
2. a focus category per session: the user's drifting taste, or a step of the category Markov chain
   from the previous session's category;
3. a chain of item views inside each session: "related items" clicks (item-level first-order
   structure), fresh picks in the focus category shaped by the user type (cheapest of several,
   favourite brand, long-tail exploration), occasional jumps to a neighbouring category;
4. the funnel: cart / fav per view, checkout of carted items at the end of the session;
5. follow-up visits: buying the complement of a purchased item, restocking consumables at their
   interval, reviews some days after purchases;
6. sessions are pushed apart so none overlap, then everything is cut at the end of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shopseq.data.schema import EventType
from shopseq.synthetic.campaigns import CampaignPlan
from shopseq.synthetic.catalogue import Catalogue
from shopseq.synthetic.config import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, SyntheticShopConfig
from shopseq.synthetic.users import TypeTable, UserBlock

VIEW, CART, FAV, PURCHASE, REVIEW = (int(t) for t in EventType)
MIN_SESSION_GAP_MS = 20 * MINUTE_MS  # a pause this long starts a new session in most shops
VIEW_GAP_MIN_MS = 8 * SECOND_MS  # cart/fav of a view land before the next view (offsets < 8 s)
CATEGORY_JUMP = 0.12  # P(a fresh pick comes from a neighbouring category of the session focus)
SESSION_KINDS = ("organic", "campaign", "complement", "restock", "review")


@dataclass
class _Buffer:
    """Append-only column buffers; concatenated once at the end."""

    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.cols.setdefault(k, []).append(v)

    def get(self, name: str) -> np.ndarray:
        return np.concatenate(self.cols[name])


@dataclass
class ChunkEvents:
    """Events of one user block, sorted by (user, timestamp). Indices are internal."""

    users: UserBlock
    user: np.ndarray  # (E,) local user index
    item: np.ndarray  # (E,) internal item index
    ts: np.ndarray  # (E,) int64 ms UTC
    etype: np.ndarray  # (E,) int8 EventType code
    session: np.ndarray  # (E,) session ordinal within the user
    price: np.ndarray  # (E,) float64, campaign discount applied
    quantity: np.ndarray  # (E,) int32
    responded: np.ndarray  # (n_campaigns, U) planted campaign responders
    purchased_promoted: np.ndarray  # (n_campaigns, U) bought a promoted item in the window
    session_kinds: dict[str, int]  # sessions started per kind (before the end-of-log cut)


def _visit_times(config: SyntheticShopConfig, rng: np.random.Generator, n: int,
                 window: tuple[int, int] | None = None) -> np.ndarray:
    if window is None:
        wd0 = config.start_date.weekday()
        w = np.asarray(config.weekday_weights)[(wd0 + np.arange(config.days)) % 7]
        day = np.searchsorted(np.cumsum(w / w.sum()), rng.random(n), side="right")
        day = np.minimum(day, config.days - 1)
        base = config.start_ms + day * DAY_MS
    else:
        n_days = max(1, (window[1] - window[0]) // DAY_MS)
        base = window[0] + rng.integers(0, n_days, n) * DAY_MS
    hw = np.asarray(config.hour_weights)
    hour = np.minimum(np.searchsorted(np.cumsum(hw / hw.sum()), rng.random(n), side="right"), 23)
    return (base + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)).astype(np.int64)


def _taste_category(users: UserBlock, su: np.ndarray, frac_b: np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
    """Draw a taste category per session; taste B replaces taste A with probability ``frac_b``."""
    n = len(su)
    use_b = rng.random(n) < frac_b
    cum = np.where(use_b[:, None], users.taste_b_cum[su], users.taste_a_cum[su])
    slot = np.minimum((rng.random(n)[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)
    return np.where(use_b, users.taste_b[su, slot], users.taste_a[su, slot]).astype(np.int32)


def _pick(cat: Catalogue, types: TypeTable, users: UserBlock, cats: np.ndarray, uu: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """A fresh item pick in ``cats`` for local users ``uu``, shaped by their type."""
    n = len(cats)
    ty = users.type[uu]
    item = cat.sample_in_category(cats, rng.random(n))
    tail = rng.random(n) < types["tail_exploration"][ty]
    if tail.any():
        item[tail] = cat.sample_uniform_in_category(cats[tail], rng.random(int(tail.sum())))
    # Price-sensitive types take the cheapest of k popular candidates.
    k = types["price_candidates"][ty].astype(np.int64)
    rows = np.flatnonzero((k > 1) & ~tail)
    if len(rows):
        kmax = int(k[rows].max())
        extra = cat.sample_in_category(np.repeat(cats[rows], kmax - 1), rng.random(len(rows) * (kmax - 1)))
        cand = np.concatenate([item[rows, None], extra.reshape(len(rows), kmax - 1)], axis=1)
        price = np.where(np.arange(kmax) < k[rows, None], cat.item_price[cand], np.inf)
        item[rows] = cand[np.arange(len(rows)), price.argmin(axis=1)]
    # Loyal types stick to their favourite brand when it sells in this category.
    loyal = np.flatnonzero(rng.random(n) < types["brand_loyalty"][ty])
    if len(loyal):
        alt, found = cat.sample_in_brand(cats[loyal], users.fav_brand[uu[loyal]], rng.random(len(loyal)))
        item[loyal] = np.where(found, alt, item[loyal])
    return item


def _campaign_items(plan: CampaignPlan, camp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.full(len(camp), -1, dtype=np.int32)
    for c, campaign in enumerate(plan.campaigns):
        rows = np.flatnonzero(camp == c)
        if len(rows):
            out[rows] = campaign.sample_items(rng.random(len(rows)))
    return out


def _promote(plan: CampaignPlan, responded: np.ndarray, picks: np.ndarray, cats: np.ndarray,
             uu: np.ndarray, when: np.ndarray, rng: np.random.Generator) -> None:
    """In place: responders inside a campaign window pick promoted items with ``lift`` x weight."""
    for c, campaign in enumerate(plan.campaigns):
        rows = np.flatnonzero(responded[c][uu] & campaign.active(when))
        if len(rows) == 0:
            continue
        swap = rows[rng.random(len(rows)) < campaign.swap_prob(cats[rows])]
        picks[swap] = campaign.sample_in_category(cats[swap], rng.random(len(swap)))


def _within_user_rank(sorted_user: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... inside each run of equal values of a sorted array."""
    n = len(sorted_user)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.r_[True, sorted_user[1:] != sorted_user[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return np.arange(n) - start


def generate_chunk(config: SyntheticShopConfig, cat: Catalogue, plan: CampaignPlan, types: TypeTable,
                   users: UserBlock, rng: np.random.Generator) -> ChunkEvents:
    t0, t1 = config.start_ms, config.end_ms
    n_users = len(users)
    utype = users.type
    n_camp = len(plan)

    # 1. Visits: organic ones, then extra visits of campaign responders inside the window.
    lam = config.mean_sessions_per_user * types["session_rate"][utype] * users.activity
    n_org = np.clip(rng.poisson(lam), 1, config.max_sessions_per_user)
    s_user = [np.repeat(np.arange(n_users), n_org)]
    s_start = [_visit_times(config, rng, int(n_org.sum()))]
    s_camp = [np.full(int(n_org.sum()), -1, dtype=np.int16)]
    responded = np.zeros((n_camp, n_users), dtype=bool)
    taste_on_a = np.diff(users.taste_a_cum, axis=1, prepend=0.0) > 0
    taste_on_b = np.diff(users.taste_b_cum, axis=1, prepend=0.0) > 0
    for c, campaign in enumerate(plan.campaigns):
        mc = plan.member_category[c]
        affine = (mc[users.taste_a] & taste_on_a).any(axis=1) | (mc[users.taste_b] & taste_on_b).any(axis=1)
        p = np.clip(types["campaign_response"][utype] * np.where(affine, 1.6, 0.8), 0.0, 1.0)
        responded[c] = rng.random(n_users) < p
        # Visit rate x lift inside the window: the extra visits land on a promoted item (the ad's link).
        in_window = lam * (campaign.end_ms - campaign.start_ms) / (t1 - t0)
        n_extra = np.where(responded[c], rng.poisson((campaign.lift - 1.0) * in_window), 0)
        s_user.append(np.repeat(np.arange(n_users), n_extra))
        s_start.append(_visit_times(config, rng, int(n_extra.sum()), (campaign.start_ms, campaign.end_ms)))
        s_camp.append(np.full(int(n_extra.sum()), c, dtype=np.int16))
    su, start, camp = np.concatenate(s_user), np.concatenate(s_start), np.concatenate(s_camp)
    order = np.lexsort((start, su))
    su, start, camp = su[order], start[order], camp[order]
    n_sess = len(su)
    k = _within_user_rank(su)

    # 2. Focus category per session: taste (drifting from A to B over the log) or a Markov step.
    frac_b = users.drift[su] * (start - t0) / (t1 - t0)
    focus = _taste_category(users, su, frac_b, rng)
    forced = _campaign_items(plan, camp, rng)
    is_forced = forced >= 0
    focus[is_forced] = cat.item_category[forced[is_forced]]
    sticky = (rng.random(n_sess) < types["category_stickiness"][utype[su]]) & ~is_forced
    u_next = rng.random(n_sess)
    by_k = np.argsort(k, kind="stable")
    bounds = np.searchsorted(k[by_k], np.arange(int(k.max(initial=0)) + 2))
    for kk in range(1, len(bounds) - 1):
        idx = by_k[bounds[kk]:bounds[kk + 1]]
        idx = idx[sticky[idx]]
        # Sessions are sorted by (user, time), so the user's previous session is idx - 1.
        focus[idx] = cat.next_category(focus[idx - 1], u_next[idx])

    # 3. View chains. Sessions sorted by length so the active ones at step j are a prefix.
    length = np.minimum(rng.geometric(1.0 / types["views_per_session"][utype[su]]),
                        config.max_views_per_session)
    n_views = int(length.sum())
    off = np.cumsum(length) - length
    by_len = np.argsort(-length, kind="stable")
    counts = np.bincount(length, minlength=int(length.max(initial=0)) + 1)
    n_active = n_sess - np.cumsum(counts)[:-1]  # n_active[j] = sessions with length > j
    view_item = np.empty(n_views, dtype=np.int32)
    cur = _pick(cat, types, users, focus, su, rng)
    _promote(plan, responded, cur, focus, su, start, rng)
    cur = np.where(is_forced, forced, cur)
    view_item[off] = cur
    for j in range(1, len(n_active)):
        s = by_len[: n_active[j]]
        r = rng.random(len(s))
        nxt = np.empty(len(s), dtype=np.int32)
        rel = r < types["related_follow"][utype[su[s]]]
        nxt[rel] = cat.related(cur[s[rel]], rng.random(int(rel.sum())))
        fresh = s[~rel]
        fcat = focus[fresh]
        jump = rng.random(len(fresh)) < CATEGORY_JUMP
        fcat = np.where(jump, cat.next_category(fcat, rng.random(len(fresh))), fcat)
        picked = _pick(cat, types, users, fcat, su[fresh], rng)
        _promote(plan, responded, picked, fcat, su[fresh], start[fresh], rng)
        nxt[~rel] = picked
        cur[s] = nxt
        view_item[off[s] + j] = nxt

    # 4. Timing and funnel.
    vs = np.repeat(np.arange(n_sess), length)
    vu = su[vs]
    vt = utype[vu]
    gap = np.clip(rng.lognormal(np.log(40_000), 0.9, n_views), VIEW_GAP_MIN_MS, 15 * MINUTE_MS).astype(np.int64)
    gap[off] = 0
    cg = np.cumsum(gap)
    view_ts = start[vs] + cg - cg[off][vs]

    p_cart = types["p_cart"][vt].copy()
    p_buy = types["p_buy"][vt].copy()
    p_cart *= np.where(cat.item_brand[view_item] == users.fav_brand[vu],
                       1.0 + types["brand_loyalty"][vt] * 0.8, 1.0)
    p_cart *= np.where(cat.item_consumable[view_item], 1.0 + 0.1 * types["consumable_affinity"][vt], 1.0)
    for c, campaign in enumerate(plan.campaigns):
        hit = plan.member[c][view_item] & campaign.active(view_ts) & responded[c][vu]
        p_cart[hit] *= np.sqrt(campaign.lift)
    carted = rng.random(n_views) < np.minimum(p_cart, 0.95)
    faved = rng.random(n_views) < types["p_fav"][vt]
    bought = carted & (rng.random(n_views) < np.minimum(p_buy, 0.97))
    qty_r = rng.random(n_views)
    qty = np.where(cat.item_consumable[view_item], 1 + rng.poisson(0.4, n_views),
                   1 + (qty_r < 0.06) + (qty_r < 0.015)).astype(np.int32)

    last_ts = view_ts[off + length - 1]
    checkout = rng.integers(30 * SECOND_MS, 240 * SECOND_MS, n_sess)
    cb = np.cumsum(bought)
    rank = cb - 1 - (cb[off] - bought[off])[vs]
    n_bought = np.bincount(vs, weights=bought, minlength=n_sess).astype(np.int64)
    end = last_ts + VIEW_GAP_MIN_MS + np.where(n_bought > 0, checkout + n_bought * 2 * SECOND_MS, 0)

    sess = _Buffer()
    sess.add(user=su, start=start, end=end)
    ev = _Buffer()
    ev.add(sess=vs, item=view_item, ts=view_ts, etype=np.full(n_views, VIEW, np.int8), qty=np.ones(n_views, np.int32))
    c_idx = np.flatnonzero(carted)
    ev.add(sess=vs[c_idx], item=view_item[c_idx], ts=view_ts[c_idx] + rng.integers(1500, 6000, len(c_idx)),
           etype=np.full(len(c_idx), CART, np.int8), qty=qty[c_idx])
    f_idx = np.flatnonzero(faved)
    ev.add(sess=vs[f_idx], item=view_item[f_idx], ts=view_ts[f_idx] + rng.integers(6000, 7900, len(f_idx)),
           etype=np.full(len(f_idx), FAV, np.int8), qty=np.ones(len(f_idx), np.int32))
    b_idx = np.flatnonzero(bought)
    b_ts = last_ts[vs[b_idx]] + checkout[vs[b_idx]] + rank[b_idx] * 2 * SECOND_MS
    ev.add(sess=vs[b_idx], item=view_item[b_idx], ts=b_ts, etype=np.full(len(b_idx), PURCHASE, np.int8),
           qty=qty[b_idx])
    kinds = {"organic": int((camp < 0).sum()), "campaign": int((camp >= 0).sum())}
    n_sess_total = n_sess

    def new_sessions(user: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> np.ndarray:
        nonlocal n_sess_total
        ids = np.arange(n_sess_total, n_sess_total + len(user))
        n_sess_total += len(user)
        sess.add(user=user, start=s0, end=s1)
        return ids

    # 5a. Complements: come back within hours or days to buy the item that goes with the purchase.
    p_user, p_item, p_ts, p_qty = vu[b_idx], view_item[b_idx], b_ts, qty[b_idx]
    comp = cat.item_complement[p_item]
    go = np.flatnonzero((comp >= 0) & (rng.random(len(p_item)) < types["complement_follow"][utype[p_user]]))
    delay = np.clip(rng.lognormal(np.log(20 * HOUR_MS), 1.0, len(go)), 15 * MINUTE_MS, 14 * DAY_MS)
    cs = p_ts[go] + delay.astype(np.int64)
    keep = cs < t1
    go, cs = go[keep], cs[keep]
    cu, ci = p_user[go], comp[go]
    ids = new_sessions(cu, cs, cs + 6 * MINUTE_MS)
    n = len(go)
    ev.add(sess=ids, item=ci, ts=cs, etype=np.full(n, VIEW, np.int8), qty=np.ones(n, np.int32))
    cart_m = rng.random(n) < 0.8
    buy_m = cart_m & (rng.random(n) < 0.8)
    ev.add(sess=ids[cart_m], item=ci[cart_m], ts=cs[cart_m] + rng.integers(20_000, 90_000, int(cart_m.sum())),
           etype=np.full(int(cart_m.sum()), CART, np.int8), qty=np.ones(int(cart_m.sum()), np.int32))
    cb_ts = cs[buy_m] + rng.integers(120_000, 300_000, int(buy_m.sum()))
    ev.add(sess=ids[buy_m], item=ci[buy_m], ts=cb_ts, etype=np.full(int(buy_m.sum()), PURCHASE, np.int8),
           qty=np.ones(int(buy_m.sum()), np.int32))
    kinds["complement"] = n
    p_user = np.concatenate([p_user, cu[buy_m]])
    p_item = np.concatenate([p_item, ci[buy_m]])
    p_ts = np.concatenate([p_ts, cb_ts])
    p_qty = np.concatenate([p_qty, np.ones(int(buy_m.sum()), np.int32)])

    # 5b. Consumables: the first purchase of a consumable starts a restock chain at its interval.
    cons = np.flatnonzero(cat.item_consumable[p_item])
    key = p_user[cons].astype(np.int64) * cat.n_items + p_item[cons]
    ko = np.lexsort((p_ts[cons], key))
    first = cons[ko][np.r_[True, key[ko][1:] != key[ko][:-1]]] if len(ko) else cons
    r_user, r_item, r_ts, r_qty = p_user[first], p_item[first], p_ts[first], p_qty[first]
    interval = cat.item_interval_days[r_item] * DAY_MS
    rs_user: list[np.ndarray] = []
    rs_item: list[np.ndarray] = []
    rs_ts: list[np.ndarray] = []
    n_restock = 0
    for _ in range(int(config.days / 4) + 2):  # intervals are >= 5 days, jitter aside
        alive = rng.random(len(r_user)) < types["restock_keep"][utype[r_user]]
        r_ts = r_ts + (interval * rng.lognormal(0.0, 0.12, len(r_user))).astype(np.int64)
        alive &= r_ts < t1
        r_user, r_item, r_ts, r_qty, interval = (a[alive] for a in (r_user, r_item, r_ts, r_qty, interval))
        n = len(r_user)
        if n == 0:
            break
        ids = new_sessions(r_user, r_ts, r_ts + 5 * MINUTE_MS)
        viewed = rng.random(n) < 0.5
        ev.add(sess=ids[viewed], item=r_item[viewed], ts=r_ts[viewed],
               etype=np.full(int(viewed.sum()), VIEW, np.int8), qty=np.ones(int(viewed.sum()), np.int32))
        ev.add(sess=ids, item=r_item, ts=r_ts + rng.integers(10_000, 60_000, n),
               etype=np.full(n, CART, np.int8), qty=r_qty)
        buy_ts = r_ts + rng.integers(90_000, 240_000, n)
        ev.add(sess=ids, item=r_item, ts=buy_ts, etype=np.full(n, PURCHASE, np.int8), qty=r_qty)
        rs_user.append(r_user)
        rs_item.append(r_item)
        rs_ts.append(buy_ts)
        n_restock += n
    kinds["restock"] = n_restock
    p_user = np.concatenate([p_user, *rs_user])
    p_item = np.concatenate([p_item, *rs_item])
    p_ts = np.concatenate([p_ts, *rs_ts])

    # 5c. Reviews, a few days after some purchases (their own one-event visit).
    go = np.flatnonzero(rng.random(len(p_user)) < types["review_rate"][utype[p_user]])
    rv = p_ts[go] + np.clip(rng.lognormal(np.log(6 * DAY_MS), 0.5, len(go)), DAY_MS, 30 * DAY_MS).astype(np.int64)
    keep = rv < t1
    go, rv = go[keep], rv[keep]
    ids = new_sessions(p_user[go], rv, rv)
    ev.add(sess=ids, item=p_item[go], ts=rv, etype=np.full(len(go), REVIEW, np.int8),
           qty=np.ones(len(go), np.int32))
    kinds["review"] = len(go)

    # 6. Push overlapping sessions apart: start'_k = max(start_k, end'_{k-1} + gap), solved in closed
    # form as prefix sums plus a per-user running maximum (users are separated by a large offset).
    all_user, all_start, all_end = sess.get("user"), sess.get("start"), sess.get("end")
    so = np.lexsort((all_start, all_user))
    us, st = all_user[so].astype(np.int64), all_start[so] - t0
    dur = all_end[so] - all_start[so] + MIN_SESSION_GAP_MS
    excl = np.cumsum(dur) - dur
    first_of_user = np.r_[True, us[1:] != us[:-1]] if len(us) else np.zeros(0, bool)
    base = np.maximum.accumulate(np.where(first_of_user, excl, 0))
    prefix = excl - base
    big = np.int64(1) << 40
    run_max = np.maximum.accumulate(st - prefix + us * big) - us * big
    shift = np.empty(len(so), dtype=np.int64)
    shift[so] = prefix + run_max - st
    ordinal = np.empty(len(so), dtype=np.int32)
    ordinal[so] = _within_user_rank(us)

    e_sess = ev.get("sess")
    e_ts = ev.get("ts") + shift[e_sess]
    keep = e_ts < t1
    e_sess, e_ts = e_sess[keep], e_ts[keep]
    e_item, e_type, e_qty = ev.get("item")[keep], ev.get("etype")[keep], ev.get("qty")[keep]
    e_user = all_user[e_sess]
    eo = np.lexsort((e_type, e_ts, e_user))
    e_user, e_item, e_ts, e_type, e_qty, e_sess = (a[eo] for a in (e_user, e_item, e_ts, e_type, e_qty, e_sess))

    price = cat.item_price[e_item].copy()
    purchased_promoted = np.zeros((n_camp, n_users), dtype=bool)
    is_buy = e_type == PURCHASE
    for c, campaign in enumerate(plan.campaigns):
        promo = plan.member[c][e_item] & campaign.active(e_ts)
        price[promo] = np.round(cat.item_price[e_item[promo]] * (1.0 - campaign.discount), 2)
        purchased_promoted[c, np.unique(e_user[promo & is_buy])] = True

    return ChunkEvents(users=users, user=e_user.astype(np.int32), item=e_item.astype(np.int32), ts=e_ts,
                       etype=e_type, session=ordinal[e_sess], price=price, quantity=e_qty.astype(np.int32),
                       responded=responded, purchased_promoted=purchased_promoted, session_kinds=kinds)
