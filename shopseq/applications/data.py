"""What every application reads: the store's sequences encoded with a run's item vocabulary, and
per-item attributes (category, brand, price) aligned with the item indices.

Attributes come from the ``items`` table when it has them (last level of ``category_path``, brand,
list price) and otherwise from the events (most frequent ``category``, median ``price``); unknown
values are -1 (category / brand) or NaN (price).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from shopseq.data.sequences import Sequences, build_sequences, build_user_vocab
from shopseq.data.store import EventStore
from shopseq.data.vocab import Vocabulary
from shopseq.models.base import Recommender
from shopseq.runs.experiment import load_run

DAY_MS = 86_400_000


@dataclass
class ItemCatalog:
    """Arrays indexed by item index (0 = padding): category / brand codes and list prices."""

    category: np.ndarray  # int32 (n_items + 1,), -1 = unknown
    category_names: np.ndarray  # object (n_categories,)
    brand: np.ndarray  # int32 (n_items + 1,), -1 = unknown
    brand_names: np.ndarray  # object (n_brands,)
    price: np.ndarray  # float64 (n_items + 1,), NaN = unknown

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @property
    def n_brands(self) -> int:
        return len(self.brand_names)

    @property
    def has_prices(self) -> bool:
        return bool(np.isfinite(self.price).any())

    def category_codes(self, names: list[str]) -> np.ndarray:
        """Codes of category names (-1 where unknown)."""
        lookup = {n: i for i, n in enumerate(self.category_names)}
        return np.array([lookup.get(n, -1) for n in names], dtype=np.int64)


def _codes(values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary-encode a string column: (int32 codes with -1 for null, names)."""
    enc = values.combine_chunks().dictionary_encode()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, np.asarray(enc.dictionary.to_pylist(), dtype=object)


def load_item_catalog(con: duckdb.DuckDBPyConnection, item_vocab: Vocabulary) -> ItemCatalog:
    """One query: the vocabulary joined with the items table and per-item event aggregates."""
    name = f"_apps_iv_{uuid.uuid4().hex}"
    con.register(name, pa.table({"item_id": item_vocab.ids,
                                 "i": pa.array(np.arange(1, len(item_vocab) + 1, dtype=np.int32))}))
    try:
        tbl = con.sql(f"""
            WITH ev AS (
                SELECT item_id, mode(category) AS category, median(price) AS price
                FROM events WHERE item_id IN (SELECT item_id FROM {name}) GROUP BY item_id)
            SELECT v.i,
                   coalesce(CAST(it.category_path[-1] AS VARCHAR), ev.category) AS category,
                   it.brand AS brand,
                   coalesce(it.price, ev.price) AS price
            FROM {name} v
            LEFT JOIN items it ON it.item_id = v.item_id
            LEFT JOIN ev ON ev.item_id = v.item_id
            ORDER BY v.i""").to_arrow_table()
    finally:
        con.unregister(name)
    n = len(item_vocab) + 1
    cat_codes, cat_names = _codes(tbl.column("category"))
    brand_codes, brand_names = _codes(tbl.column("brand"))
    price = tbl.column("price").to_numpy(zero_copy_only=False).astype(np.float64)
    pad = np.array([-1], dtype=np.int32)
    return ItemCatalog(
        category=np.concatenate([pad, cat_codes])[:n], category_names=cat_names,
        brand=np.concatenate([pad, brand_codes])[:n], brand_names=brand_names,
        price=np.concatenate([[np.nan], price])[:n],
    )


@dataclass
class AppData:
    """Sequences (encoded with the model's item vocabulary) plus item attributes."""

    seqs: Sequences
    items: ItemCatalog

    @property
    def start_ms(self) -> int:
        """Where the bulk of the log starts: the 0.1 % time quantile, so a few stray early events
        (the Taobao sample has 35 from months before its 9 days) do not stretch every window."""
        if not self.seqs.n_events:
            return 0
        return int(np.quantile(np.asarray(self.seqs.timestamps), 0.001, method="lower"))

    @property
    def end_ms(self) -> int:
        """One past the last event: the 'now' of the data."""
        return int(np.max(self.seqs.timestamps)) + 1 if self.seqs.n_events else 0

    @property
    def event_category(self) -> np.ndarray:
        return self.items.category[np.asarray(self.seqs.items, dtype=np.int64)]

    def before(self, cut_ms: int) -> Sequences:
        """The events strictly before ``cut_ms`` (every user keeps its slot)."""
        return self.seqs.subset(np.asarray(self.seqs.timestamps) < cut_ms)

    @classmethod
    def from_store(cls, store: EventStore, item_vocab: Vocabulary) -> AppData:
        """Every user of the store (current vocabulary), items restricted to the model's vocabulary."""
        users = build_user_vocab(store.con)
        seqs = build_sequences(store.con, user_vocab=users, item_vocab=item_vocab,
                               source_version=store.cache_key)
        return cls(seqs, load_item_catalog(store.con, item_vocab))


def load_run_and_data(store: EventStore, run_dir: Path) -> tuple[Recommender, AppData, dict[str, Any]]:
    """A run's model, the store's data in the run's item vocabulary, and the run's config.json."""
    model, meta = load_run(run_dir)
    items = Vocabulary.load(Path(run_dir) / "vocab" / "items.parquet")
    if len(items) != model.n_items:
        raise ValueError(f"{run_dir}: vocabulary has {len(items)} items, the model {model.n_items}")
    return model, AppData.from_store(store, items), meta


def train_cut_ms(meta: dict[str, Any]) -> int | None:
    """The time before which the run's model was trained (its validation cut), if it used a time split."""
    split = meta.get("split", {})
    return int(split["valid_start"]) if "valid_start" in split else None


def floor_day(ms: int) -> int:
    return (int(ms) // DAY_MS) * DAY_MS
