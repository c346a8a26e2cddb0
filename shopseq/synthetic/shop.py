"""Public entry points: generate a synthetic shop in memory, write it, or stream a big one to Parquet.

Random streams: the catalogue and campaigns use their own seeds; users are generated in chunks of
``config.chunk_users``, each chunk with its own seeded generator. So the output depends only on the
config (chunk size included), and ``generate_shop`` equals ``generate_to_parquet`` for the same config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopseq.data.schema import EVENT_TYPE_NAMES
from shopseq.synthetic.behaviour import (
    CATEGORY_JUMP,
    MIN_SESSION_GAP_MS,
    SESSION_KINDS,
    ChunkEvents,
    generate_chunk,
)
from shopseq.synthetic.campaigns import CampaignPlan, build_campaigns
from shopseq.synthetic.catalogue import SUCCESSOR_PROBS, SUCCESSOR_SLOTS, Catalogue, build_catalogue
from shopseq.synthetic.config import SyntheticShopConfig
from shopseq.synthetic.users import TypeTable, build_users

TRUTH_FORMAT = "shopseq-synthetic-truth/1"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

EVENTS_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64()),
    ("event_type", pa.string()), ("session_id", pa.string()), ("category", pa.string()),
    ("price", pa.float64()), ("quantity", pa.int32()),
])
ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("category_path", pa.list_(pa.string())), ("brand", pa.string()),
    ("price", pa.float64()),
])
USERS_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("user_type", pa.string()), ("activity", pa.float64()),
    ("home_category", pa.string()), ("drift_category", pa.string()), ("drift", pa.float64()),
    ("favourite_brand", pa.string()),
])
CAMPAIGNS_SCHEMA = pa.schema([
    ("campaign_id", pa.string()), ("name", pa.string()), ("kind", pa.string()), ("start_ms", pa.int64()),
    ("end_ms", pa.int64()), ("item_ids", pa.list_(pa.string())), ("category", pa.string()),
    ("lift", pa.float64()), ("discount", pa.float64()),
])
RESPONSES_SCHEMA = pa.schema([
    ("campaign_id", pa.string()), ("user_id", pa.string()), ("responded", pa.bool_()),
    ("purchased_promoted", pa.bool_()),
])
ITEM_TRUTH_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("category", pa.string()), ("popularity", pa.float64()),
    ("is_consumable", pa.bool_()), ("repurchase_days", pa.float64()), ("complement_item_id", pa.string()),
    ("related_item_ids", pa.list_(pa.string())),
])
TRANSITIONS_SCHEMA = pa.schema([
    ("from_category", pa.string()), ("to_category", pa.string()), ("probability", pa.float64()),
])


@dataclass
class SyntheticShop:
    """A generated shop: the event log, the catalogue and users, and the planted ground truth."""

    config: SyntheticShopConfig
    events: pa.Table  # EVENTS_SCHEMA, sorted by (user_id, timestamp)
    items: pa.Table  # ITEMS_SCHEMA
    users: pa.Table  # USERS_SCHEMA (user_type is the planted type)
    campaigns: pa.Table  # CAMPAIGNS_SCHEMA
    campaign_responses: pa.Table  # RESPONSES_SCHEMA, one row per (campaign, user)
    item_truth: pa.Table  # ITEM_TRUTH_SCHEMA: popularity, consumables, complements, related items
    category_transitions: pa.Table  # TRANSITIONS_SCHEMA: the planted category Markov chain
    truth: dict[str, Any] = field(default_factory=dict)  # the truth.json manifest


@dataclass
class ShopChunk:
    """One block of users with everything that depends on them."""

    index: int
    events: pa.Table
    users: pa.Table
    campaign_responses: pa.Table
    stats: dict[str, Any]


@dataclass
class _Static:
    """Everything that does not depend on the users: built once, shared by all chunks."""

    config: SyntheticShopConfig
    cat: Catalogue
    plan: CampaignPlan
    types: TypeTable
    item_ids: pa.Array  # public ids in internal item order
    category_names: pa.Array
    brand_names: pa.Array
    user_width: int


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _static(config: SyntheticShopConfig) -> _Static:
    cat = build_catalogue(config)
    return _Static(
        config=config, cat=cat, plan=build_campaigns(config, cat), types=TypeTable(config.user_types),
        item_ids=_ids("i", cat.item_numbers, cat.id_width),
        category_names=pa.array(cat.category_names, type=pa.string()),
        brand_names=pa.array(cat.brand_names, type=pa.string()),
        user_width=max(7, len(str(config.resolved_n_users - 1))),
    )


def _chunk_tables(st: _Static, index: int, ch: ChunkEvents) -> ShopChunk:
    cat, users = st.cat, ch.users
    user_ids = _ids("u", users.index, st.user_width)
    ev_user = user_ids.take(pa.array(ch.user))
    sess = pc.utf8_lpad(pc.cast(pa.array(ch.session, type=pa.int32()), pa.string()), width=4, padding="0")
    events = pa.Table.from_arrays([
        ev_user,
        st.item_ids.take(pa.array(ch.item)),
        pa.array(ch.ts, type=pa.int64()),
        pa.array(EVENT_TYPE_NAMES, type=pa.string()).take(pa.array(ch.etype)),
        pc.binary_join_element_wise(ev_user, sess, "-s"),
        st.category_names.take(pa.array(cat.item_category[ch.item])),
        pa.array(ch.price, type=pa.float64()),
        pa.array(ch.quantity, type=pa.int32()),
    ], schema=EVENTS_SCHEMA)

    type_names = pa.array(st.types.names, type=pa.string())
    users_tbl = pa.Table.from_arrays([
        user_ids,
        type_names.take(pa.array(users.type.astype(np.int32))),
        pa.array(np.round(users.activity, 4)),
        st.category_names.take(pa.array(users.taste_a[:, 0])),
        st.category_names.take(pa.array(users.taste_b[:, 0])),
        pa.array(np.round(users.drift, 4)),
        st.brand_names.take(pa.array(users.fav_brand)),
    ], schema=USERS_SCHEMA)

    n_camp, n_users = ch.responded.shape
    camp_ids = pa.array([c.campaign_id for c in st.plan.campaigns], type=pa.string())
    responses = pa.Table.from_arrays([
        camp_ids.take(pa.array(np.repeat(np.arange(n_camp), n_users))),
        user_ids.take(pa.array(np.tile(np.arange(n_users), n_camp))),
        pa.array(ch.responded.reshape(-1)),
        pa.array(ch.purchased_promoted.reshape(-1)),
    ], schema=RESPONSES_SCHEMA)

    stats = {
        "events": len(ch.ts),
        "event_types": np.bincount(ch.etype, minlength=len(EVENT_TYPE_NAMES)).tolist(),
        "user_types": np.bincount(users.type, minlength=len(st.types.names)).tolist(),
        "sessions_by_kind": ch.session_kinds,
        "responders": ch.responded.sum(axis=1).tolist(),
        "purchased_promoted": ch.purchased_promoted.sum(axis=1).tolist(),
    }
    return ShopChunk(index=index, events=events, users=users_tbl, campaign_responses=responses, stats=stats)


def _iter_chunks(st: _Static, chunk_users: int | None = None) -> Iterator[ShopChunk]:
    config = st.config
    size = chunk_users or config.chunk_users
    n_total = config.resolved_n_users
    for index, first in enumerate(range(0, n_total, size)):
        rng = np.random.default_rng([config.seed, 2, index])
        users = build_users(config, st.cat, st.types, first, min(size, n_total - first), rng)
        yield _chunk_tables(st, index, generate_chunk(config, st.cat, st.plan, st.types, users, rng))


def iter_shop_chunks(config: SyntheticShopConfig, chunk_users: int | None = None) -> Iterator[ShopChunk]:
    """Generate the shop block by block of users (each block's events sorted by user and time, blocks in
    user order). A ``chunk_users`` other than ``config.chunk_users`` changes the random draws."""
    return _iter_chunks(_static(config), chunk_users)


def _static_tables(st: _Static) -> dict[str, pa.Table]:
    cat, plan = st.cat, st.plan
    items = pa.Table.from_arrays([
        st.item_ids,
        pa.array([cat.category_paths[c] for c in range(cat.n_categories)],
                 type=pa.list_(pa.string())).take(pa.array(cat.item_category)),
        st.brand_names.take(pa.array(cat.item_brand)),
        pa.array(cat.item_price),
    ], schema=ITEMS_SCHEMA)
    # Public item order (i000000, i000001, ...) reads better than the internal category order.
    by_id = pa.array(np.argsort(cat.item_numbers))
    items = items.take(by_id)

    comp = cat.item_complement
    comp_ids = st.item_ids.take(pa.array(np.maximum(comp, 0)))
    n, r = cat.item_related.shape
    related = pa.ListArray.from_arrays(pa.array(np.arange(0, n * r + 1, r, dtype=np.int32)),
                                       st.item_ids.take(pa.array(cat.item_related.reshape(-1))))
    item_truth = pa.Table.from_arrays([
        st.item_ids,
        st.category_names.take(pa.array(cat.item_category)),
        pa.array(cat.item_pop),
        pa.array(cat.item_consumable),
        pa.array(cat.item_interval_days, from_pandas=True),
        pc.if_else(pa.array(comp >= 0), comp_ids, pa.nulls(n, pa.string())),
        related,
    ], schema=ITEM_TRUTH_SCHEMA).take(by_id)

    c_from = np.repeat(np.arange(cat.n_categories), len(SUCCESSOR_SLOTS))
    c_to = cat.successors.reshape(-1)
    key = c_from.astype(np.int64) * cat.n_categories + c_to
    uniq, inv = np.unique(key, return_inverse=True)
    prob = np.bincount(inv, weights=np.tile(SUCCESSOR_PROBS, cat.n_categories))
    transitions = pa.Table.from_arrays([
        st.category_names.take(pa.array(uniq // cat.n_categories)),
        st.category_names.take(pa.array(uniq % cat.n_categories)),
        pa.array(prob),
    ], schema=TRANSITIONS_SCHEMA)

    campaigns = pa.Table.from_pylist([
        {"campaign_id": c.campaign_id, "name": c.name, "kind": c.kind, "start_ms": c.start_ms,
         "end_ms": c.end_ms, "item_ids": st.item_ids.take(pa.array(c.items)).to_pylist(),
         "category": None if c.category < 0 else str(cat.category_names[c.category]),
         "lift": c.lift, "discount": c.discount}
        for c in plan.campaigns
    ], schema=CAMPAIGNS_SCHEMA)
    return {"items": items, "item_truth": item_truth, "category_transitions": transitions,
            "campaigns": campaigns}


def _merge_stats(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in chunks:
        for k, v in s.items():
            if isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, 0) + vv
            elif isinstance(v, list):
                out[k] = [a + b for a, b in zip(out.get(k, [0] * len(v)), v, strict=True)]
            else:
                out[k] = out.get(k, 0) + v
    return out


def _truth(st: _Static, stats: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    config, cat, plan, types = st.config, st.cat, st.plan, st.types
    per_type = {name: config.user_types[name].model_dump() for name in types.names}
    return {
        "format": TRUTH_FORMAT,
        "config": config.model_dump(mode="json"),
        "time_range_ms": [config.start_ms, config.end_ms],
        "counts": {
            "events": stats.get("events", 0),
            "users": config.resolved_n_users,
            "items": cat.n_items,
            "categories": cat.n_categories,
            "brands": cat.n_brands,
            "event_types": dict(zip(EVENT_TYPE_NAMES, stats.get("event_types", []), strict=False)),
            "user_types": dict(zip(types.names, stats.get("user_types", []), strict=False)),
            "sessions_by_kind": {k: stats.get("sessions_by_kind", {}).get(k, 0) for k in SESSION_KINDS},
        },
        "files": files,
        "user_types": per_type,
        "planted": {
            "weekly_seasonality": {
                "weekday_weights": dict(zip(WEEKDAYS, config.weekday_weights, strict=True)),
                "hour_weights_utc": list(config.hour_weights),
            },
            "category_markov": {
                "description": "a session's focus category follows the chain from the previous session's "
                               "with P(category_stickiness of the user type), else the user's taste",
                "slots": dict(zip(SUCCESSOR_SLOTS, SUCCESSOR_PROBS.tolist(), strict=True)),
                "table": "category_transitions",
                "in_session_jump_prob": CATEGORY_JUMP,
            },
            "taste_drift": "users.home_category -> users.drift_category; the share of sessions drawn from the "
                           "drifted taste grows linearly from 0 to users.drift over the log",
            "related_items": {
                "description": "next view is a click on one of the current item's related items with "
                               "P(related_follow of the user type); earlier slots are clicked more",
                "per_item": int(cat.item_related.shape[1]),
                "slot_probs": np.diff(cat.related_cum, prepend=0.0).round(4).tolist(),
                "table": "item_truth.related_item_ids",
            },
            "complements": {
                "description": "after buying A, the user comes back for item_truth.complement_item_id with "
                               "P(complement_follow of the user type) after a log-normal delay (median 20 h), "
                               "views it, carts it (0.8) and buys it (0.8 of carts)",
                "n_items_with_complement": int((cat.item_complement >= 0).sum()),
            },
            "consumables": {
                "description": "the first purchase of a consumable starts a restock chain: again after "
                               "item_truth.repurchase_days (x lognormal(0, 0.12)) with P(restock_keep)",
                "n_items": int(cat.item_consumable.sum()),
                "repurchase_median_days": config.repurchase_median_days,
            },
            "campaigns": {
                "description": "responders (campaign_responses.responded; P = campaign_response of the type, "
                               "x1.6 if the promotion matches their taste, x0.8 otherwise) visit lift x as often "
                               "in the window (the extra visits land on a promoted item), pick promoted items "
                               "with lift x their usual weight and cart them with P x sqrt(lift); every user "
                               "sees the discounted price",
                "responders": dict(zip([c.campaign_id for c in plan.campaigns], stats.get("responders", []),
                                       strict=False)),
                "buyers_in_window": dict(zip([c.campaign_id for c in plan.campaigns],
                                             stats.get("purchased_promoted", []), strict=False)),
            },
            "sessions": {"min_gap_ms": MIN_SESSION_GAP_MS,
                         "description": "purchases are checked out together at the end of a session"},
        },
        "campaigns": [
            {"campaign_id": c.campaign_id, "name": c.name, "kind": c.kind, "start_ms": c.start_ms,
             "end_ms": c.end_ms, "n_items": len(c.items),
             "category": None if c.category < 0 else str(cat.category_names[c.category]),
             "lift": c.lift, "discount": c.discount}
            for c in plan.campaigns
        ],
        "categories": [" > ".join(p) for p in cat.category_paths],
    }


def generate_shop(config: SyntheticShopConfig | None = None) -> SyntheticShop:
    """Generate the whole shop in memory (fine up to tens of millions of events)."""
    config = config or SyntheticShopConfig()
    st = _static(config)
    chunks = list(_iter_chunks(st))
    tables = _static_tables(st)
    stats = _merge_stats([c.stats for c in chunks])
    return SyntheticShop(
        config=config,
        events=pa.concat_tables([c.events for c in chunks]),
        users=pa.concat_tables([c.users for c in chunks]),
        campaign_responses=pa.concat_tables([c.campaign_responses for c in chunks]),
        truth=_truth(st, stats, {}),
        **tables,
    )


_TABLE_FILES = ("items", "users", "campaigns", "campaign_responses", "item_truth", "category_transitions")


def _clear_event_files(folder: Path) -> None:
    # Stale event files from an earlier, bigger run would silently join the new data set.
    for old in [*folder.glob("events-*.parquet"), folder / "events.parquet"]:
        old.unlink(missing_ok=True)


def write_shop(shop: SyntheticShop, folder: str | Path, rows_per_file: int | None = None) -> dict[str, Any]:
    """Write every table as Parquet plus ``truth.json``; returns the manifest written there.

    Events go to one ``events.parquet``, or with ``rows_per_file`` to parts ``events-00000.parquet``, ...
    (the manifest's ``files.events`` lists them either way). Earlier event files in ``folder`` are removed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clear_event_files(folder)
    if rows_per_file is None:
        pq.write_table(shop.events, folder / "events.parquet")
        event_files = ["events.parquet"]
    else:
        event_files = []
        for i, offset in enumerate(range(0, max(shop.events.num_rows, 1), rows_per_file)):
            name = f"events-{i:05d}.parquet"
            pq.write_table(shop.events.slice(offset, rows_per_file), folder / name)
            event_files.append(name)
    for name in _TABLE_FILES:
        pq.write_table(getattr(shop, name), folder / f"{name}.parquet")
    truth = {**shop.truth, "files": _files(event_files)}
    (folder / "truth.json").write_text(json.dumps(truth, indent=2))
    return truth


def _files(event_files: list[str]) -> dict[str, Any]:
    return {"events": event_files, **{name: f"{name}.parquet" for name in _TABLE_FILES}}


def generate_to_parquet(config: SyntheticShopConfig, folder: str | Path, chunk_users: int | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """Stream a shop of any size to ``folder``: one ``events-NNNNN.parquet`` per user chunk (each sorted
    by user and time, parts in user order), users and campaign responses appended chunk by chunk.
    Memory stays at about one chunk. The events equal ``generate_shop(config).events`` when
    ``chunk_users`` is left as in the config; returns the manifest written to ``truth.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clear_event_files(folder)
    st = _static(config)
    for name, table in _static_tables(st).items():
        pq.write_table(table, folder / f"{name}.parquet")
    stats, event_files = [], []
    chunks: Iterator[ShopChunk] = _iter_chunks(st, chunk_users)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, total=config.n_chunks(chunk_users), unit="chunk")
    with pq.ParquetWriter(folder / "users.parquet", USERS_SCHEMA) as uw, \
            pq.ParquetWriter(folder / "campaign_responses.parquet", RESPONSES_SCHEMA) as rw:
        for chunk in chunks:
            name = f"events-{chunk.index:05d}.parquet"
            pq.write_table(chunk.events, folder / name)
            event_files.append(name)
            uw.write_table(chunk.users)
            rw.write_table(chunk.campaign_responses)
            stats.append(chunk.stats)
    truth = _truth(st, _merge_stats(stats), _files(event_files))
    (folder / "truth.json").write_text(json.dumps(truth, indent=2))
    return truth
