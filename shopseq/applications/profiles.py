"""User profiles: one row per user with what the shop knows and predicts about them.

Columns: ``user_id`` (pseudonym), ``events``, ``segment``, ``vector`` (the model's user vector),
``top_categories`` / ``top_brands`` (name + recency-weighted affinity share), ``recency_days``,
``frequency_30d`` (events in the last 30 days), ``purchases``, ``monetary`` (sum of list prices of
purchases; null without prices), ``purchase_intent`` (calibrated P(purchase within the intent
horizon)), ``next_category`` and ``next_category_prob`` (the model's next-item distribution summed
per category). Saved as one Parquet file (written atomically) with the build's metadata.

``build_profiles(store, run_dir)`` is the entry point; ``Profiles.lookup(pseudonym)`` returns one
user's profile as a plain dict (what ``GET /users/{id}/profile`` serves).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from shopseq.applications.data import DAY_MS, AppData, load_run_and_data
from shopseq.applications.features import UserFeatures, activity_features, affinities, behaviour_features
from shopseq.applications.intent import fit_intent
from shopseq.applications.segments import Segmentation, SegmentConfig, describe_segments, segment_space, segment_users
from shopseq.applications.vectors import group_distribution, user_vectors
from shopseq.applications.windowed import WindowConfig, population
from shopseq.atomic import temp_sibling
from shopseq.data.store import EventStore
from shopseq.data.vocab import Vocabulary
from shopseq.models.base import Recommender

META_KEY = b"shopseq.profiles"

# plain words for the behaviour features: (when a segment is above average, when below)
PHRASES = {
    "log_events": ("very active", "few events"),
    "views_per_session": ("long browsing sessions", "short, targeted sessions"),
    "cart_rate": ("adds to cart often", "rarely adds to cart"),
    "fav_rate": ("saves many favourites", "rarely saves favourites"),
    "buy_per_cart": ("completes most carts", "abandons carts"),
    "review_rate": ("writes reviews", "rarely reviews"),
    "price_index": ("buys pricier items than the category median", "picks cheap items in each category"),
    "brand_share": ("sticks to one brand", "brand-agnostic"),
    "item_popularity": ("goes for best sellers", "explores the long tail"),
    "repeat_purchase_share": ("re-buys the same items (restocking)", "rarely re-buys"),
    "category_spread": ("spread over many categories", "focused on few categories"),
    "sessions_per_week": ("visits often", "visits rarely"),
}


class ProfileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_n: int = Field(3, ge=1, description="top categories / brands kept per user")
    half_life_days: float = Field(30.0, gt=0, description="half-life of the affinity weights")
    intent: WindowConfig = Field(default_factory=WindowConfig)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)


@dataclass
class Profiles:
    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)
    _index: Vocabulary | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def lookup(self, user_id: str) -> dict[str, Any] | None:
        """One user's profile (by pseudonym) as a JSON-ready dict; None when unknown."""
        if self._index is None:
            self._index = Vocabulary(self.table.column("user_id"), "user")
        row = int(self._index.encode([user_id])[0])
        if row < 0:
            return None
        out = self.table.slice(row, 1).to_pylist()[0]
        out["segment_description"] = self.segment_descriptions().get(out["segment"])
        return out

    def segment_descriptions(self) -> dict[int, str]:
        return {int(s["segment"]): s["description"] for s in self.meta.get("segments", [])}

    def save(self, path: Path) -> Path:
        """Parquet with the metadata in the schema, written under a temp name and renamed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        table = self.table.replace_schema_metadata({META_KEY: json.dumps(self.meta, default=str).encode()})
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Profiles:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        return cls(table.replace_schema_metadata(None), meta)


def _top_lists(aff_offsets: np.ndarray, codes: np.ndarray, shares: np.ndarray, rows: np.ndarray,
               names: np.ndarray) -> pa.Array:
    """list<struct<name, affinity>> per row from the sparse top-n affinities."""
    counts = np.diff(aff_offsets)[rows]
    starts = aff_offsets[rows]
    take = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
    name_arr = pa.array(names[codes[take]] if len(take) else np.array([], dtype=object), type=pa.string())
    values = pa.StructArray.from_arrays([name_arr, pa.array(shares[take].astype(np.float32))],
                                        names=["name", "affinity"])
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def build_profiles_from(model: Recommender, data: AppData, config: ProfileConfig | None = None,
                        as_of_ms: int | None = None, run_info: dict[str, Any] | None = None) -> Profiles:
    config = config or ProfileConfig()
    cut = data.end_ms if as_of_ms is None else int(as_of_ms)
    rows = population(data, cut)
    if len(rows) == 0:
        raise ValueError("no user has events before the profile time")
    before = data.before(cut)
    vectors = user_vectors(model, before, rows)
    act = activity_features(data, cut).select(rows)
    beh = behaviour_features(data, cut).select(rows)

    # segments: fit on users with enough history, everyone assigned to the nearest centroid
    space = segment_space(beh.values, vectors, config.segments.vector_weight)
    fit_rows = np.flatnonzero(act.column("events") >= config.segments.min_events)
    seg = segment_users(space, config.segments, fit_rows)

    items = data.items
    cats = affinities(data, cut, items.category, items.n_categories, config.top_n, config.half_life_days)
    brands = affinities(data, cut, items.brand, items.n_brands, config.top_n, config.half_life_days)
    next_cat = group_distribution(model, before, rows, items.category, max(items.n_categories, 1))
    intent = np.full(len(rows), np.nan)
    intent_note = ""
    try:
        intent = fit_intent(model, data, config.intent, cut).predict(model, data, cut, rows)[1]
    except ValueError as exc:  # too short a log, or a window without any purchase
        intent_note = str(exc)

    has_cats = items.n_categories > 0
    table = pa.table({
        "user_id": data.seqs.user_vocab.decode(rows).astype(object),
        "events": act.column("events").astype(np.int64),
        "segment": seg.labels.astype(np.int32),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]).cast(
            pa.list_(pa.float32())),
        "top_categories": _top_lists(cats.offsets, cats.codes, cats.shares, rows, items.category_names),
        "top_brands": _top_lists(brands.offsets, brands.codes, brands.shares, rows, items.brand_names),
        "recency_days": act.column("recency_days").astype(np.float32),
        "frequency_30d": act.column("events_30d").astype(np.int64),
        "purchases": act.column("purchases").astype(np.int64),
        "monetary": pa.array(act.column("monetary"), mask=np.full(len(rows), not items.has_prices)),
        "purchase_intent": intent.astype(np.float32),
        "next_category": pa.array(items.category_names[next_cat.argmax(1)] if has_cats else [None] * len(rows),
                                  type=pa.string()),
        "next_category_prob": next_cat.max(1).astype(np.float32) if has_cats else np.zeros(len(rows), np.float32),
    })
    meta = {
        "as_of_ms": cut, "users": len(rows), "vector_dims": int(vectors.shape[1]),
        "intent_horizon_days": config.intent.horizon_days, "intent_note": intent_note,
        "segmentation": seg.describe_choice(), "config": config.model_dump(mode="json"), **(run_info or {}),
        "segments": segment_summary(seg, beh, act, intent, cats, items.category_names, rows),
        "silhouette": {str(k): v for k, v in seg.scores.items()},
    }
    return Profiles(table, meta)


def segment_summary(seg: Segmentation, beh: UserFeatures, act: UserFeatures, intent: np.ndarray, cats: Any,
                    category_names: np.ndarray, rows: np.ndarray) -> list[dict[str, Any]]:
    """Per segment: size, activity, price level, intent, top categories and a plain description."""
    words = describe_segments(beh.values, beh.names, seg.labels, seg.k, PHRASES)
    # summed affinity shares of the members' top categories
    counts = np.diff(cats.offsets)[rows]
    owner = np.repeat(np.arange(len(rows)), counts)
    take = np.repeat(cats.offsets[rows] - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
    out = []
    for s in range(seg.k):
        members = seg.labels == s
        n = int(members.sum())
        in_seg = members[owner]
        cat_w = np.bincount(cats.codes[take][in_seg], weights=cats.shares[take][in_seg],
                            minlength=len(category_names))
        top = np.argsort(-cat_w, kind="stable")[:3]
        out.append({
            "segment": s, "users": n, "share": n / max(len(rows), 1),
            "events_per_user": float(act.column("events")[members].mean()) if n else 0.0,
            "purchases_per_user": float(act.column("purchases")[members].mean()) if n else 0.0,
            "price_index": float(beh.column("price_index")[members].mean()) if n else 0.0,
            "cart_rate": float(beh.column("cart_rate")[members].mean()) if n else 0.0,
            "purchase_intent": float(np.nanmean(intent[members])) if n and np.isfinite(intent[members]).any()
            else float("nan"),
            "top_categories": [str(category_names[c]) for c in top if cat_w[c] > 0],
            "description": words[s],
        })
    return out


def build_profiles(store: EventStore, run_dir: Path, config: ProfileConfig | None = None,
                   as_of_ms: int | None = None) -> Profiles:
    """Profiles of every user of the store, from a run's model (the serving API's entry point)."""
    model, data, _ = load_run_and_data(store, Path(run_dir))
    info = {"run_dir": str(run_dir), "model": model.name, "store_version": store.version}
    return build_profiles_from(model, data, config, as_of_ms, info)


def segment_report(profiles: Profiles, ari: float | None = None) -> str:
    """HTML: how the number of segments was chosen, and what distinguishes each segment."""
    from shopseq.reports.html import HtmlReport

    meta = profiles.meta
    segs = meta.get("segments", [])
    report = HtmlReport("shopseq segments")
    as_of = meta.get("as_of_ms", 0)
    report.paragraph(f"{meta.get('users', 0):,} users profiled as of day {as_of // DAY_MS} (ms {as_of}); "
                     f"model {meta.get('model', '?')}. {meta.get('segmentation', '')}.", note=True)
    if ari is not None:
        report.paragraph(f"Agreement with the planted shopper types (adjusted Rand index): {ari:.3f}.")
    report.heading("What distinguishes each segment")
    for s in segs:
        cats = ", ".join(s["top_categories"]) or "no category data"
        report.paragraph(f"Segment {s['segment']} ({s['users']:,} users, {s['share']:.0%}): {s['description']}. "
                         f"Top categories: {cats}. {s['events_per_user']:.1f} events and "
                         f"{s['purchases_per_user']:.2f} purchases per user; purchase intent "
                         f"{s['purchase_intent']:.3f}.")
    report.table([{k: (", ".join(v) if isinstance(v, list) else v) for k, v in s.items() if k != "description"}
                  for s in segs])
    labels = [f"segment {s['segment']}" for s in segs]
    report.bar_plot("users per segment", labels, {"users": [s["users"] for s in segs]})
    report.bar_plot("activity and intent by segment", labels, {
        "events per user / 10": [s["events_per_user"] / 10 for s in segs],
        "purchases per user": [s["purchases_per_user"] for s in segs],
        "purchase intent x 10": [10 * s["purchase_intent"] for s in segs],
    })
    report.bar_plot("price level (log price / category median)", labels,
                    {"price index": [s["price_index"] for s in segs]})
    scores = meta.get("silhouette", {})
    if scores:
        report.heading("Choosing the number of segments")
        ks = sorted(int(k) for k in scores)
        report.line_plot("mean silhouette by number of segments", ks, {"silhouette": [scores[str(k)] for k in ks]},
                         "segments", "silhouette")
    return report.render()
