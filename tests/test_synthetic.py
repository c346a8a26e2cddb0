"""The synthetic shop: determinism, schema, and that every planted structure is visible in the data."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopseq.data.schema import EVENT_TYPE_NAMES
from shopseq.synthetic import (
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    SyntheticShop,
    SyntheticShopConfig,
    generate_shop,
    generate_to_parquet,
    iter_shop_chunks,
    write_shop,
)

DAY_MS = 86_400_000
SMALL = {"n_users": 5_000, "n_items": 2_000, "n_categories": 30, "chunk_users": 2_000, "seed": 7}


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate_shop(SyntheticShopConfig(**SMALL))


def _sql(shop: SyntheticShop, query: str) -> list[tuple]:
    con = duckdb.connect()
    for name in ("events", "items", "users", "campaigns", "campaign_responses", "item_truth"):
        con.register(name, getattr(shop, name))
    return con.execute(query).fetchall()


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


# ---------------------------------------------------------------------------------------------- basics


def test_same_config_same_output_and_seed_matters() -> None:
    cfg = SyntheticShopConfig(n_users=800, n_items=400, n_categories=20, chunk_users=300)
    a, b = generate_shop(cfg), generate_shop(cfg)
    for name in ("events", "items", "users", "campaigns", "campaign_responses", "item_truth"):
        assert getattr(a, name).equals(getattr(b, name)), name
    other = generate_shop(cfg.model_copy(update={"seed": 1}))
    assert not other.events.equals(a.events)


def test_schema_types_and_order(shop: SyntheticShop) -> None:
    ev, cfg = shop.events, shop.config
    assert ev.schema == EVENTS_SCHEMA
    assert shop.items.schema == ITEMS_SCHEMA
    assert 150_000 > ev.num_rows > 40_000
    assert set(ev.column("event_type").unique().to_pylist()) == set(EVENT_TYPE_NAMES)

    users, ts = _np(ev, "user_id"), _np(ev, "timestamp")
    assert users[0].startswith("u") and len(users[0]) == 8
    order = np.lexsort((ts, users))
    assert (order == np.arange(len(order))).all(), "events must be sorted by (user_id, timestamp)"
    assert ts.min() >= cfg.start_ms and ts.max() < cfg.end_ms

    # A session is one contiguous run of its user's events, and sessions never overlap.
    sid = _np(ev, "session_id")
    starts = np.r_[True, sid[1:] != sid[:-1]]
    assert len(np.unique(sid)) == starts.sum()
    same_user = np.r_[False, users[1:] == users[:-1]]
    assert (np.diff(ts, prepend=0)[starts & same_user] >= 20 * 60_000).all()

    # Category and price agree with the item table; quantities are mostly 1.
    (bad_cat,) = _sql(shop, "SELECT count(*) FROM events e JOIN items i USING (item_id) "
                            "WHERE e.category <> i.category_path[-1]")[0]
    assert bad_cat == 0
    (n_missing,) = _sql(shop, "SELECT count(*) FROM events e ANTI JOIN items i USING (item_id)")[0]
    assert n_missing == 0
    qty = _np(ev, "quantity")
    assert qty.min() >= 1 and (qty == 1).mean() > 0.95
    assert (_np(ev, "price") > 0).all()
    paths = shop.items.column("category_path").to_pylist()
    assert {len(p) for p in paths} <= {2, 3} and 3 in {len(p) for p in paths}


def test_reviews_follow_purchases(shop: SyntheticShop) -> None:
    (orphans,) = _sql(shop, """
        SELECT count(*) FROM events r WHERE r.event_type = 'review' AND NOT EXISTS (
            SELECT 1 FROM events p WHERE p.event_type = 'purchase' AND p.user_id = r.user_id
              AND p.item_id = r.item_id AND p.timestamp < r.timestamp)""")[0]
    assert orphans == 0


# ------------------------------------------------------------------------------------ planted structure


def test_funnel_proportions(shop: SyntheticShop) -> None:
    counts = dict(_sql(shop, "SELECT event_type, count(*) FROM events GROUP BY 1"))
    total = sum(counts.values())
    assert counts["view"] / total > 0.75, "most events are views"
    assert counts["view"] > counts["cart"] > counts["purchase"] > counts["review"] > 0
    assert 0.02 < counts["purchase"] / counts["view"] < 0.10
    assert counts["review"] / counts["purchase"] < 0.15


def test_user_types_are_planted_and_behave_differently(shop: SyntheticShop) -> None:
    types = dict(_sql(shop, "SELECT user_type, count(*) FROM users GROUP BY 1"))
    assert len(types) >= 4 and sum(types.values()) == shop.config.n_users
    conv = dict(_sql(shop, """
        SELECT u.user_type, count(*) FILTER (event_type = 'purchase') / count(*) FILTER (event_type = 'view')
        FROM events JOIN users u USING (user_id) GROUP BY 1"""))
    assert conv["window_shopper"] < 0.5 * conv["casual"] < conv["restocker"]
    loyal = dict(_sql(shop, """
        SELECT u.user_type, avg((i.brand = u.favourite_brand)::INT)
        FROM events e JOIN users u USING (user_id) JOIN items i USING (item_id)
        WHERE e.event_type = 'view' GROUP BY 1"""))
    assert loyal["brand_loyal"] > 2 * loyal["casual"]


def test_weekly_and_daily_seasonality(shop: SyntheticShop) -> None:
    # Session starts: 1970-01-01 was a Thursday, so (day + 3) % 7 is Monday=0.
    starts = _sql(shop, "SELECT min(timestamp) FROM events GROUP BY session_id")
    t = np.array([s[0] for s in starts])
    weekday = np.bincount((t // DAY_MS + 3) % 7, minlength=7)
    assert weekday[6] > 1.25 * weekday[1], "Sundays are busier than Tuesdays"
    hour = np.bincount((t // 3_600_000) % 24, minlength=24)
    assert hour[20] > 5 * hour[4], "evenings are busier than the small hours"


def test_complements_are_bought_after_the_item(shop: SyntheticShop) -> None:
    rows = _sql(shop, """
        WITH buys AS (SELECT user_id, item_id, timestamp FROM events WHERE event_type = 'purchase'),
        pairs AS (  -- a decoy per item: the complement of another item, to measure chance co-purchases
            SELECT item_id, complement_item_id AS comp,
                   lead(complement_item_id, 7) OVER (ORDER BY item_id) AS decoy
            FROM item_truth WHERE complement_item_id IS NOT NULL),
        anchors AS (SELECT b.user_id, b.timestamp, p.comp, p.decoy FROM buys b JOIN pairs p USING (item_id))
        SELECT avg((EXISTS (SELECT 1 FROM buys x WHERE x.user_id = a.user_id AND x.item_id = a.comp
                     AND x.timestamp > a.timestamp AND x.timestamp <= a.timestamp + 14 * 86400000))::INT),
               avg((EXISTS (SELECT 1 FROM buys x WHERE x.user_id = a.user_id AND x.item_id = a.decoy
                     AND x.timestamp > a.timestamp AND x.timestamp <= a.timestamp + 14 * 86400000))::INT),
               count(*)
        FROM anchors a""")
    followed, chance, n = rows[0]
    assert n > 500
    assert followed > 0.15 and followed > 10 * chance


def test_consumables_are_repurchased_at_their_interval(shop: SyntheticShop) -> None:
    rep = dict(_sql(shop, """
        SELECT t.is_consumable, avg((n > 1)::INT) FROM (
            SELECT user_id, item_id, count(*) AS n FROM events WHERE event_type = 'purchase' GROUP BY ALL
        ) JOIN item_truth t USING (item_id) GROUP BY 1"""))
    assert rep[True] > 0.3 and rep[True] > 4 * rep[False]
    (ratio,) = _sql(shop, """
        SELECT median(gap / (t.repurchase_days * 86400000)) FROM (
            SELECT item_id, timestamp - lag(timestamp) OVER (PARTITION BY user_id, item_id ORDER BY timestamp)
                   AS gap
            FROM events WHERE event_type = 'purchase'
        ) JOIN item_truth t USING (item_id) WHERE t.is_consumable AND gap IS NOT NULL""")[0]
    assert 0.8 < ratio < 1.2


def test_category_tastes_drift(shop: SyntheticShop) -> None:
    share = _sql(shop, f"""
        SELECT (e.timestamp - {shop.config.start_ms}) * 4 // {shop.config.days * DAY_MS} AS q,
               avg((e.category = u.home_category)::INT), avg((e.category = u.drift_category)::INT)
        FROM events e JOIN users u USING (user_id)
        WHERE e.event_type = 'view' AND u.home_category <> u.drift_category GROUP BY 1 ORDER BY 1""")
    (_, home_first, drift_first), (_, home_last, drift_last) = share[0], share[-1]
    assert home_last < home_first and drift_last > 1.3 * drift_first


def test_campaigns_lift_promoted_items_in_their_window(shop: SyntheticShop) -> None:
    assert shop.campaigns.num_rows == shop.config.n_campaigns
    assert set(shop.campaigns.column("kind").to_pylist()) == {"items", "category"}
    rows = _sql(shop, """
        WITH promo AS (SELECT campaign_id, start_ms, end_ms, unnest(item_ids) AS item_id FROM campaigns)
        SELECT p.campaign_id, any_value((p.end_ms - p.start_ms) / 86400000) AS days,
               count(*) FILTER (e.timestamp >= p.start_ms AND e.timestamp < p.end_ms) AS inside,
               count(*) FILTER (e.timestamp < p.start_ms OR e.timestamp >= p.end_ms) AS outside
        FROM events e JOIN promo p USING (item_id)
        WHERE e.event_type IN ('cart', 'purchase') GROUP BY 1""")
    for campaign_id, days, inside, outside in rows:
        per_day_in = inside / days
        per_day_out = (outside + 1) / (shop.config.days - days)
        assert per_day_in > 2 * per_day_out, campaign_id

    # Responders buy promoted items in the window far more often; response differs by user type.
    conv = dict(_sql(shop, "SELECT responded, avg(purchased_promoted::INT) FROM campaign_responses GROUP BY 1"))
    assert conv[True] > 3 * conv[False]
    resp = dict(_sql(shop, """SELECT u.user_type, avg(responded::INT) FROM campaign_responses
                              JOIN users u USING (user_id) GROUP BY 1"""))
    assert resp["bargain_hunter"] > 3 * resp["brand_loyal"]

    # Every user sees the discounted price inside the window.
    (n_full_price,) = _sql(shop, """
        WITH promo AS (SELECT start_ms, end_ms, discount, unnest(item_ids) AS item_id FROM campaigns)
        SELECT count(*) FROM events e JOIN promo p USING (item_id) JOIN items i USING (item_id)
        WHERE e.timestamp >= p.start_ms AND e.timestamp < p.end_ms AND e.price >= i.price""")[0]
    assert n_full_price == 0


def _markov_vs_popularity(events: pa.Table, k: int = 10) -> tuple[float, float]:
    """Hit rate @k for each user's last next-item transition (consecutive repeats collapsed),
    training on all earlier transitions: first-order Markov counts vs global popularity."""
    users = np.unique(_np(events, "user_id"), return_inverse=True)[1]
    items = np.unique(_np(events, "item_id"), return_inverse=True)[1]
    keep = np.r_[True, (items[1:] != items[:-1]) | (users[1:] != users[:-1])]
    users, items = users[keep], items[keep]
    n_items = int(items.max()) + 1
    src = np.flatnonzero(users[1:] == users[:-1])  # transitions items[i] -> items[i + 1]
    is_last = np.r_[users[1:] != users[:-1], True][src + 1]
    train, test = src[~is_last], src[is_last]

    popular = np.argsort(-np.bincount(items[train + 1], minlength=n_items))[:k]
    hit_pop = np.isin(items[test + 1], popular).mean()

    pair, count = np.unique(items[train].astype(np.int64) * n_items + items[train + 1], return_counts=True)
    a, b = pair // n_items, pair % n_items
    order = np.lexsort((-count, a))
    a, b = a[order], b[order]
    rank = np.arange(len(a)) - np.searchsorted(a, a)
    table = np.tile(popular, (n_items, 1))  # popularity fills the slots of rare predecessors
    top = rank < k
    table[a[top], rank[top]] = b[top]
    hit_markov = (table[items[test]] == items[test + 1][:, None]).any(axis=1).mean()
    return float(hit_markov), float(hit_pop)


def test_first_order_markov_beats_popularity(shop: SyntheticShop) -> None:
    hit_markov, hit_pop = _markov_vs_popularity(shop.events)
    assert hit_markov > 2 * hit_pop and hit_markov - hit_pop > 0.2, (hit_markov, hit_pop)


# ------------------------------------------------------------------------------------- output and scale


def test_write_and_stream_give_the_same_files(tmp_path: Path) -> None:
    cfg = SyntheticShopConfig(n_users=1_500, n_items=600, n_categories=20, chunk_users=500)
    shop = generate_shop(cfg)
    single = write_shop(shop, tmp_path / "single")
    parts = write_shop(shop, tmp_path / "parts", rows_per_file=10_000)
    streamed = generate_to_parquet(cfg, tmp_path / "stream")
    assert single["files"]["events"] == ["events.parquet"]
    assert len(parts["files"]["events"]) == -(-shop.events.num_rows // 10_000)
    assert len(streamed["files"]["events"]) == cfg.n_chunks() == 3
    for folder in ("single", "parts", "stream"):
        manifest = json.loads((tmp_path / folder / "truth.json").read_text())
        files = [tmp_path / folder / f for f in manifest["files"]["events"]]
        assert pq.read_table(files).equals(shop.events)
        assert pq.read_table(tmp_path / folder / "users.parquet").equals(shop.users)
        assert pq.read_table(tmp_path / folder / "campaign_responses.parquet").equals(shop.campaign_responses)
        assert pq.read_table(tmp_path / folder / "items.parquet").equals(shop.items)
        assert manifest["counts"]["events"] == shop.events.num_rows
        assert set(manifest["counts"]["user_types"]) == set(cfg.user_types)
        assert {"category_markov", "complements", "consumables", "campaigns"} <= set(manifest["planted"])
        assert len(manifest["campaigns"]) == cfg.n_campaigns
    # Rewriting into the same folder leaves no stale event parts behind.
    write_shop(shop, tmp_path / "stream")
    assert sorted(p.name for p in (tmp_path / "stream").glob("events*.parquet")) == ["events.parquet"]


def test_chunks_cover_users_in_order() -> None:
    cfg = SyntheticShopConfig(n_users=1_000, n_items=500, n_categories=20)
    chunks = list(iter_shop_chunks(cfg, chunk_users=300))
    assert [c.users.num_rows for c in chunks] == [300, 300, 300, 100]
    ids = [u for c in chunks for u in c.users.column("user_id").to_pylist()]
    assert ids == sorted(ids) and len(set(ids)) == 1_000
    last = [c.events.column("user_id")[-1].as_py() for c in chunks]
    first = [c.events.column("user_id")[0].as_py() for c in chunks]
    assert all(a < b for a, b in zip(last, first[1:], strict=False))


def test_config_scale_and_validation() -> None:
    base = SyntheticShopConfig()
    big = SyntheticShopConfig(scale=100)
    assert big.resolved_n_users == 100 * base.resolved_n_users
    assert big.resolved_n_items == 10 * base.resolved_n_items
    target = SyntheticShopConfig.for_events(2e7)
    assert 0.8e6 < target.resolved_n_users < 1.6e6
    small = SyntheticShopConfig.for_events(60_000, n_items=1_000, n_categories=20)
    assert 0.8 * 60_000 < generate_shop(small).events.num_rows < 1.25 * 60_000
    with pytest.raises(ValueError):
        SyntheticShopConfig(weekday_weights=(1.0, 1.0))
    with pytest.raises(ValueError):
        SyntheticShopConfig(n_items=10, n_categories=60)
