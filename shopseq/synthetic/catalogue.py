"""The synthetic catalogue: category tree, brands, items, prices, popularity and item-level structure.

Items are stored in an internal order sorted by (category, brand) so that "sample an item of category
c (or of brand b in category c) by popularity" is one vectorised ``searchsorted`` on a cumulative
weight array offset by the group index (group g owns the interval [g, g+1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shopseq.synthetic.config import SyntheticShopConfig

# (department, typical price, mid-level categories); '*' marks consumables (bought again and again).
DEPARTMENTS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("Beauty", 18.0, ("Skin Care*", "Hair Care*", "Makeup*", "Fragrance", "Nail Care*", "Bath & Body*")),
    ("Grocery", 6.0, ("Coffee & Tea*", "Snacks*", "Breakfast*", "Pantry*", "Beverages*", "Sweets*")),
    ("Health", 15.0, ("Vitamins*", "Personal Care*", "Oral Care*", "First Aid*", "Sports Nutrition*")),
    ("Pets", 22.0, ("Dog Food*", "Cat Food*", "Pet Toys", "Pet Care*", "Aquarium")),
    ("Baby", 25.0, ("Diapers*", "Baby Food*", "Strollers", "Nursery", "Baby Care*")),
    ("Household", 9.0, ("Cleaning*", "Laundry*", "Paper Goods*", "Storage")),
    ("Electronics", 180.0, ("Phones", "Laptops", "Audio", "Cameras", "Wearables", "Smart Home")),
    ("Home", 45.0, ("Kitchen", "Bedding", "Furniture", "Decor", "Lighting")),
    ("Fashion", 40.0, ("Womenswear", "Menswear", "Shoes", "Bags", "Jewelry", "Watches")),
    ("Sports", 50.0, ("Fitness", "Running", "Cycling", "Camping", "Team Sports", "Yoga")),
    ("Toys", 25.0, ("Building Sets", "Dolls", "Board Games", "Puzzles", "Outdoor Play")),
    ("Books", 14.0, ("Fiction", "Non-Fiction", "Children's Books", "Comics", "Cookbooks")),
    ("Garden", 35.0, ("Plants", "Garden Tools", "Outdoor Furniture", "Grills", "Seeds*")),
    ("Office", 20.0, ("Stationery*", "Printers", "Desks", "Paper & Ink*")),
    ("Auto", 30.0, ("Car Care*", "Car Electronics", "Tires", "Motor Oil*")),
)
QUALIFIERS = ("Everyday", "Premium", "Budget", "Eco", "Pro", "Compact", "Classic", "Deluxe", "Value", "Designer")
BRAND_HEADS = ("Aur", "Bel", "Cor", "Dax", "El", "Fen", "Gal", "Hal", "Ise", "Jun", "Kal", "Lum", "Mar",
               "Nor", "Or", "Pel", "Quin", "Ros", "Sol", "Tor", "Ul", "Vel", "Wen", "Xan", "Yor", "Zen")
BRAND_TAILS = ("a", "ex", "ora", "ix", "line", "wood", "field", "ly", "co", "io", "ane", "ova", "um", "is",
               "ette")

# Category Markov chain slots: stay, two "trajectory" successors (phone -> phone case), two
# siblings, one random jump. Fixed weights keep the chain sparse and therefore learnable.
SUCCESSOR_SLOTS = ("self", "trajectory_1", "trajectory_2", "sibling_1", "sibling_2", "random")
SUCCESSOR_PROBS = np.array([0.30, 0.26, 0.14, 0.11, 0.11, 0.08])
# Relative weight of the k-th related item when a shopper clicks a "related items" widget.
RELATED_SLOT_PROBS_BASE = 0.7


@dataclass
class Catalogue:
    """Arrays indexed by category (C) or by internal item index (N), plus sampling helpers."""

    dept_names: list[str]
    category_paths: list[list[str]]
    category_names: np.ndarray  # (C,) object, unique leaf names
    category_dept: np.ndarray  # (C,) int32
    category_consumable_share: np.ndarray  # (C,) share of consumable items
    category_pop: np.ndarray  # (C,) summed item popularity
    successors: np.ndarray  # (C, 6) int32 category Markov chain
    successor_cum: np.ndarray  # (C, 6) cumulative probabilities
    complement_category: np.ndarray  # (C,) int32
    brand_names: np.ndarray  # (B,) object
    item_numbers: np.ndarray  # (N,) int64, the number in the public item id
    item_category: np.ndarray  # (N,) int32
    item_brand: np.ndarray  # (N,) int32
    item_price: np.ndarray  # (N,) float64 list price
    item_pop: np.ndarray  # (N,) float64, sums to 1
    item_consumable: np.ndarray  # (N,) bool
    item_interval_days: np.ndarray  # (N,) float64 repurchase interval, nan if not consumable
    item_complement: np.ndarray  # (N,) int32, -1 if none
    item_related: np.ndarray  # (N, R) int32, same-category "related items" widget
    related_cum: np.ndarray  # (R,) cumulative click probabilities over the related slots
    cat_start: np.ndarray  # (C,) first internal item of each category
    cat_end: np.ndarray  # (C,) one past the last
    cat_cum: np.ndarray  # (N,) category index + cumulative popularity inside the category
    group_keys: np.ndarray  # (G,) sorted category * B + brand
    group_start: np.ndarray
    group_end: np.ndarray
    group_cum: np.ndarray  # (N,) group index + cumulative popularity inside the group
    id_width: int

    @property
    def n_items(self) -> int:
        return len(self.item_category)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @property
    def n_brands(self) -> int:
        return len(self.brand_names)

    def item_id_strings(self, items: np.ndarray | None = None) -> list[str]:
        nums = self.item_numbers if items is None else self.item_numbers[items]
        return [f"i{n:0{self.id_width}d}" for n in nums.tolist()]

    def sample_in_category(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One item per entry of ``cats``, by popularity; ``u`` uniform in [0, 1)."""
        idx = np.searchsorted(self.cat_cum, cats + u, side="right")
        return np.minimum(idx, self.cat_end[cats] - 1).astype(np.int32)

    def sample_uniform_in_category(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        start = self.cat_start[cats]
        size = self.cat_end[cats] - start
        return (start + np.minimum((u * size).astype(np.int64), size - 1)).astype(np.int32)

    def sample_in_brand(self, cats: np.ndarray, brands: np.ndarray, u: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Items of brand ``brands`` in category ``cats``; second value is False where none exists."""
        keys = cats.astype(np.int64) * self.n_brands + brands
        g = np.minimum(np.searchsorted(self.group_keys, keys), len(self.group_keys) - 1)
        found = self.group_keys[g] == keys
        idx = np.searchsorted(self.group_cum, g + u, side="right")
        idx = np.minimum(idx, self.group_end[g] - 1).astype(np.int32)
        return idx, found

    def next_category(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        slot = (u[:, None] >= self.successor_cum[cats]).sum(axis=1)
        return self.successors[cats, np.minimum(slot, self.successors.shape[1] - 1)]

    def related(self, items: np.ndarray, u: np.ndarray) -> np.ndarray:
        slot = np.searchsorted(self.related_cum, u, side="right")
        return self.item_related[items, np.minimum(slot, self.item_related.shape[1] - 1)]


def _split(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` positive integers summing to ``total`` (total >= parts), roughly even."""
    return 1 + rng.multinomial(total - parts, np.full(parts, 1.0 / parts))


def _category_tree(n_leaves: int, rng: np.random.Generator) -> tuple[list[list[str]], list[int], list[bool]]:
    """Leaf paths of 2-3 levels ("Beauty > Skin Care > Premium Skin Care"), their department
    and consumable flag. Leaf names are unique so the event ``category`` column is unambiguous."""
    n_dept = min(len(DEPARTMENTS), max(1, math.ceil(n_leaves / 5)))
    depts = rng.permutation(len(DEPARTMENTS))[:n_dept]
    paths: list[list[str]] = []
    dept_of: list[int] = []
    consumable: list[bool] = []
    for d, n_d in zip(depts.tolist(), _split(n_leaves, n_dept, rng).tolist(), strict=True):
        name, _, mids = DEPARTMENTS[d]
        mids_perm = [mids[i] for i in rng.permutation(len(mids))]
        n_mid = min(len(mids), max(1, round(n_d / 2.5)))
        for mid_raw, n_m in zip(mids_perm[:n_mid], _split(n_d, n_mid, rng).tolist(), strict=True):
            mid = mid_raw.rstrip("*")
            if n_m == 1:
                leaves = [[name, mid]]
            else:
                quals = [QUALIFIERS[i] for i in rng.permutation(len(QUALIFIERS))]
                leaves = []
                for i in range(n_m):
                    q = quals[i % len(quals)] + ("" if i < len(quals) else f" {i // len(quals) + 1}")
                    leaves.append([name, mid, f"{q} {mid}"])
            paths.extend(leaves)
            dept_of.extend([d] * len(leaves))
            consumable.extend([mid_raw.endswith("*")] * len(leaves))
    return paths, dept_of, consumable


def _brand_names(n: int, rng: np.random.Generator) -> np.ndarray:
    combos = [h + t for h in BRAND_HEADS for t in BRAND_TAILS]
    order = rng.permutation(len(combos))
    names = [combos[order[i % len(combos)]] + ("" if i < len(combos) else f" {i // len(combos) + 1}")
             for i in range(n)]
    return np.array(names, dtype=object)


def _successors(paths: list[list[str]], dept: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(paths)
    succ = np.zeros((n, len(SUCCESSOR_SLOTS)), dtype=np.int32)
    mids = np.array([" > ".join(p[:2]) for p in paths], dtype=object)
    everyone = np.arange(n)
    for c in range(n):
        others = everyone[everyone != c]
        if len(others) == 0:
            succ[c] = c
            continue
        same_dept = others[dept[others] == dept[c]]
        same_mid = others[mids[others] == mids[c]]
        traj_pool = same_dept if len(same_dept) else others
        traj = [rng.choice(traj_pool if rng.random() < 0.7 else others) for _ in range(2)]
        sib_pool = same_mid if len(same_mid) else traj_pool
        sibs = rng.choice(sib_pool, size=2)
        succ[c] = [c, traj[0], traj[1], sibs[0], sibs[1], rng.choice(others)]
    return succ


def segment_cum(weights: np.ndarray, starts: np.ndarray, ends: np.ndarray, seg_of: np.ndarray) -> np.ndarray:
    """Segment index + cumulative normalised weight inside the segment (last item exactly seg+1)."""
    cs = np.cumsum(weights)
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0.0)
    total = cs[ends - 1] - before
    within = (cs - before[seg_of]) / total[seg_of]
    within[ends - 1] = 1.0
    return seg_of + within


def build_catalogue(config: SyntheticShopConfig) -> Catalogue:
    """The catalogue depends only on the seed and sizes, never on chunking."""
    rng = np.random.default_rng([config.seed, 0])
    n_items, n_brands = config.resolved_n_items, config.resolved_n_brands

    paths, dept_list, cons_list = _category_tree(config.n_categories, rng)
    n_cat = len(paths)
    cat_dept = np.array(dept_list, dtype=np.int32)
    cat_consumable = np.array(cons_list, dtype=bool)
    successors = _successors(paths, cat_dept, rng)

    # Category sizes vary (some leaves are big), but every leaf has at least two items.
    size_w = rng.lognormal(0.0, 0.6, n_cat)
    sizes = 2 + rng.multinomial(n_items - 2 * n_cat, size_w / size_w.sum())
    item_cat = np.repeat(np.arange(n_cat, dtype=np.int32), sizes)

    # Brands: each lives in one department (a quarter also in a second) with Zipf-like market share.
    brand_names = _brand_names(n_brands, rng)
    dept_w = np.bincount(cat_dept, weights=sizes, minlength=len(DEPARTMENTS))
    brand_dept = rng.choice(len(DEPARTMENTS), size=n_brands, p=dept_w / dept_w.sum())
    brand_dept2 = np.where(rng.random(n_brands) < 0.25,
                           rng.choice(len(DEPARTMENTS), size=n_brands, p=dept_w / dept_w.sum()), -1)
    brand_share = rng.permutation(np.arange(1, n_brands + 1)) ** -0.8
    brand_tier = rng.lognormal(0.0, 0.35, n_brands)
    item_dept = cat_dept[item_cat]
    item_brand = np.empty(n_items, dtype=np.int32)
    for d in np.unique(item_dept):
        in_d = np.flatnonzero(item_dept == d)
        pool = np.flatnonzero((brand_dept == d) | (brand_dept2 == d))
        if len(pool) == 0:
            pool = np.arange(n_brands)
        item_brand[in_d] = rng.choice(pool, size=len(in_d), p=brand_share[pool] / brand_share[pool].sum())

    # Log-normal prices around a department level, shifted per mid category and leaf, ".99" endings.
    dept_price = np.array([d[1] for d in DEPARTMENTS])
    mid_keys = np.unique([" > ".join(p[:2]) for p in paths], return_inverse=True)[1]
    mid_shift = rng.normal(0.0, 0.35, mid_keys.max() + 1)
    cat_mu = np.log(dept_price[cat_dept]) + mid_shift[mid_keys] + rng.normal(0.0, 0.2, n_cat)
    raw_price = np.exp(cat_mu[item_cat] + rng.normal(0.0, config.price_sigma, n_items)) * brand_tier[item_brand]
    item_price = np.maximum(np.floor(raw_price), 0.0) + 0.99

    # Zipf popularity over a random rank, times a category appeal so some leaves are hot.
    rank = rng.permutation(n_items) + 1.0
    cat_appeal = rng.lognormal(0.0, 0.5, n_cat)
    item_pop = rank ** -config.popularity_exponent * cat_appeal[item_cat]
    item_pop /= item_pop.sum()

    # Consumables: exactly the configured share, concentrated in consumable categories (Gumbel top-k).
    n_cons = round(config.consumable_share * n_items)
    keys = np.log(np.where(cat_consumable[item_cat], 12.0, 1.0)) + rng.gumbel(size=n_items)
    item_consumable = np.zeros(n_items, dtype=bool)
    if n_cons:
        item_consumable[np.argpartition(-keys, n_cons - 1)[:n_cons]] = True
    interval = np.clip(rng.lognormal(math.log(config.repurchase_median_days), 0.45, n_items), 5.0, 120.0)
    item_interval = np.where(item_consumable, np.round(interval, 1), np.nan)

    # Internal order: by (category, brand), so both sampling levels are contiguous.
    order = np.lexsort((item_brand, item_cat))
    item_cat, item_brand = item_cat[order], item_brand[order]
    item_price, item_pop = item_price[order], item_pop[order]
    item_consumable, item_interval = item_consumable[order], item_interval[order]
    # Public ids are a random permutation so the id carries no category information.
    item_numbers = rng.permutation(n_items).astype(np.int64)

    cat_start = np.searchsorted(item_cat, np.arange(n_cat), side="left")
    cat_end = np.searchsorted(item_cat, np.arange(n_cat), side="right")
    cat_cum = segment_cum(item_pop, cat_start, cat_end, item_cat)
    gkeys_all = item_cat.astype(np.int64) * n_brands + item_brand
    group_keys, group_start = np.unique(gkeys_all, return_index=True)
    group_end = np.append(group_start[1:], n_items)
    group_of = np.searchsorted(group_keys, gkeys_all)
    group_cum = segment_cum(item_pop, group_start, group_end, group_of)

    cat = Catalogue(
        dept_names=[d[0] for d in DEPARTMENTS], category_paths=paths,
        category_names=np.array([p[-1] for p in paths], dtype=object), category_dept=cat_dept,
        category_consumable_share=np.bincount(item_cat, weights=item_consumable, minlength=n_cat) / sizes,
        category_pop=np.bincount(item_cat, weights=item_pop, minlength=n_cat),
        successors=successors, successor_cum=np.tile(np.cumsum(SUCCESSOR_PROBS), (n_cat, 1)),
        complement_category=successors[:, 1].copy(), brand_names=brand_names, item_numbers=item_numbers,
        item_category=item_cat, item_brand=item_brand, item_price=item_price, item_pop=item_pop,
        item_consumable=item_consumable, item_interval_days=item_interval,
        item_complement=np.full(n_items, -1, dtype=np.int32),
        item_related=np.zeros((n_items, config.related_per_item), dtype=np.int32),
        related_cum=np.zeros(config.related_per_item), cat_start=cat_start, cat_end=cat_end,
        cat_cum=cat_cum, group_keys=group_keys, group_start=group_start, group_end=group_end,
        group_cum=group_cum, id_width=max(6, len(str(n_items - 1))),
    )

    # Related items: popular neighbours in the same category, never the item itself.
    n_rel = config.related_per_item
    rel_cats = np.repeat(item_cat, n_rel)
    rel = cat.sample_in_category(rel_cats, rng.random(len(rel_cats))).reshape(n_items, n_rel)
    own = np.arange(n_items)[:, None]
    bumped = own + 1
    bumped = np.where(bumped >= cat_end[item_cat][:, None], cat_start[item_cat][:, None], bumped)
    cat.item_related = np.where(rel == own, bumped, rel).astype(np.int32)
    slot_w = RELATED_SLOT_PROBS_BASE ** np.arange(n_rel)
    cat.related_cum = np.cumsum(slot_w / slot_w.sum())

    # Complements live in the first trajectory successor category: buying A leads to buying B.
    has = rng.random(n_items) < config.complement_share
    comp_cat = cat.complement_category[item_cat]
    comp = cat.sample_in_category(comp_cat, rng.random(n_items))
    cat.item_complement = np.where(has & (comp != np.arange(n_items)), comp, -1).astype(np.int32)
    return cat
