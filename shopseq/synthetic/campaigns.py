"""Promotion campaigns: a time window, a set of promoted items (hand-picked or a whole category), a
discount, and a lift on carts and purchases for the users who respond."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopseq.synthetic.catalogue import Catalogue, segment_cum
from shopseq.synthetic.config import DAY_MS, SyntheticShopConfig


@dataclass
class Campaign:
    campaign_id: str
    name: str
    kind: str  # "items" or "category"
    start_ms: int
    end_ms: int  # exclusive
    items: np.ndarray  # internal item indices
    item_cum: np.ndarray  # cumulative popularity over ``items``, to pick promoted items
    category: int  # leaf category index, -1 for item campaigns
    lift: float  # responders: visit rate, pick weight of promoted items and P(cart) x lift in the window
    discount: float  # price cut shown in the events during the window
    seg_cats: np.ndarray  # sorted categories holding promoted items
    seg_end: np.ndarray  # one past the last promoted item (position in ``items``) of each of them
    seg_cum: np.ndarray  # segment index + cumulative popularity inside the category, per item
    seg_share: np.ndarray  # popularity share of the promoted items inside each of those categories

    def active(self, ts: np.ndarray) -> np.ndarray:
        return (ts >= self.start_ms) & (ts < self.end_ms)

    def sample_items(self, u: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.item_cum, u, side="right"), len(self.items) - 1)
        return self.items[pos]

    def sample_in_category(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Promoted items of the given categories (which must hold some), by popularity."""
        seg = np.searchsorted(self.seg_cats, cats)
        pos = np.minimum(np.searchsorted(self.seg_cum, seg + u, side="right"), self.seg_end[seg] - 1)
        return self.items[pos]

    def swap_prob(self, cats: np.ndarray) -> np.ndarray:
        """P(replace a popularity pick in ``cats`` by a promoted item) such that the mixture equals
        sampling with promoted weights multiplied by ``lift``: (lift-1)s / (1 + (lift-1)s)."""
        seg = np.minimum(np.searchsorted(self.seg_cats, cats), len(self.seg_cats) - 1)
        s = np.where(self.seg_cats[seg] == cats, self.seg_share[seg], 0.0)
        return (self.lift - 1.0) * s / (1.0 + (self.lift - 1.0) * s)


@dataclass
class CampaignPlan:
    campaigns: list[Campaign]
    member: np.ndarray  # (n_campaigns, N) bool: item promoted by campaign
    member_category: np.ndarray  # (n_campaigns, C) bool: category holds a promoted item

    def __len__(self) -> int:
        return len(self.campaigns)


def build_campaigns(config: SyntheticShopConfig, cat: Catalogue) -> CampaignPlan:
    """Campaigns depend only on the seed and catalogue, never on chunking."""
    rng = np.random.default_rng([config.seed, 1])
    campaigns: list[Campaign] = []
    member = np.zeros((config.n_campaigns, cat.n_items), dtype=bool)
    used_cats: set[int] = set()
    for c in range(config.n_campaigns):
        length = int(rng.integers(config.campaign_min_days, config.campaign_max_days + 1))
        length = min(length, config.days)
        # Windows sit inside the log with room on both sides, so "before / during / after" exist.
        lo = min(round(0.1 * config.days), config.days - length)
        hi = max(lo, round(0.85 * config.days) - length)
        start_day = int(rng.integers(lo, hi + 1))
        start = config.start_ms + start_day * DAY_MS
        lift = float(np.round(rng.uniform(1.8, 3.2), 2))
        discount = float(rng.choice([0.10, 0.15, 0.20, 0.25, 0.30]))
        if c % 2 == 1:
            w = cat.category_pop.copy()
            w[list(used_cats)] = 0.0
            if w.sum() == 0:
                w = cat.category_pop.copy()
            leaf = int(rng.choice(cat.n_categories, p=w / w.sum()))
            used_cats.add(leaf)
            items = np.arange(cat.cat_start[leaf], cat.cat_end[leaf])
            name, kind, category = f"{cat.category_names[leaf]} Week", "category", leaf
        else:
            dept = int(rng.choice(np.unique(cat.category_dept)))
            pool = np.flatnonzero(cat.category_dept[cat.item_category] == dept)
            k = min(len(pool), int(rng.integers(8, 26)))
            # Mid-popularity picks (sqrt popularity): promotions push items, not just best sellers.
            keys = 0.5 * np.log(cat.item_pop[pool]) + rng.gumbel(size=len(pool))
            items = np.sort(pool[np.argpartition(-keys, k - 1)[:k]])
            name, kind, category = f"{cat.dept_names[dept]} Deals", "items", -1
        member[c, items] = True
        pop = cat.item_pop[items]
        item_cum = np.cumsum(pop / pop.sum())
        item_cum[-1] = 1.0
        item_cats = cat.item_category[items]  # sorted, since internal order is by category
        seg_cats, seg_start = np.unique(item_cats, return_index=True)
        seg_end = np.append(seg_start[1:], len(items))
        seg_of = np.searchsorted(seg_cats, item_cats)
        seg_share = np.bincount(seg_of, weights=pop) / cat.category_pop[seg_cats]
        campaigns.append(Campaign(
            campaign_id=f"c{c + 1:02d}", name=name, kind=kind, start_ms=start,
            end_ms=start + length * DAY_MS, items=items, item_cum=item_cum, category=category,
            lift=lift, discount=discount, seg_cats=seg_cats, seg_end=seg_end,
            seg_cum=segment_cum(pop, seg_start, seg_end, seg_of), seg_share=seg_share,
        ))
    member_category = np.zeros((config.n_campaigns, cat.n_categories), dtype=bool)
    for c, camp in enumerate(campaigns):
        member_category[c, np.unique(cat.item_category[camp.items])] = True
    return CampaignPlan(campaigns=campaigns, member=member, member_category=member_category)
