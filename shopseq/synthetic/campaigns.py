"""Promotion campaigns: a time window, a set of promoted items (hand-picked or a whole category), a
discount, and a lift on carts and purchases for the users who respond."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopseq.synthetic.catalogue import Catalogue
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
    lift: float  # multiplier on P(cart) for responders; P(buy | cart) gets sqrt(lift)
    discount: float  # price cut shown in the events during the window
    extra_sessions: float  # mean extra visits of a responder during the window

    def active(self, ts: np.ndarray) -> np.ndarray:
        return (ts >= self.start_ms) & (ts < self.end_ms)

    def sample_items(self, u: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.item_cum, u, side="right"), len(self.items) - 1)
        return self.items[pos]


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
        campaigns.append(Campaign(
            campaign_id=f"c{c + 1:02d}", name=name, kind=kind, start_ms=start,
            end_ms=start + length * DAY_MS, items=items, item_cum=item_cum, category=category,
            lift=lift, discount=discount, extra_sessions=lift - 0.8,
        ))
    member_category = np.zeros((config.n_campaigns, cat.n_categories), dtype=bool)
    for c, camp in enumerate(campaigns):
        member_category[c, np.unique(cat.item_category[camp.items])] = True
    return CampaignPlan(campaigns=campaigns, member=member, member_category=member_category)
