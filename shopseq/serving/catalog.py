"""The items the service can name: the model's vocabulary first, then items the store knows but the
model does not (index > ``n_model``: shown in histories, ignored by the model), then items first
seen through ``POST /events``. Metadata per item comes from the store's ``items`` table and the
most frequent event category; ``category_items`` is an inverted index for category filters."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from shopseq.data.store import EventStore
from shopseq.data.vocab import Vocabulary
from shopseq.serving.lookup import SortedLookup, as_str_array
from shopseq.serving.schemas import ItemInfo


class Catalog:
    def __init__(self, model_vocab: Vocabulary, store: EventStore) -> None:
        self.n_model = len(model_vocab)
        con = store.con
        con.register("_serve_vocab", pa.table({"item_id": model_vocab.ids}))
        try:
            extra = con.sql(
                "SELECT DISTINCT item_id FROM events ANTI JOIN _serve_vocab USING (item_id) ORDER BY item_id"
            ).to_arrow_table().column("item_id")
        finally:
            con.unregister("_serve_vocab")
        ids = as_str_array(pa.concat_arrays([model_vocab.ids, extra.combine_chunks().cast(pa.string())]))
        self._ids = np.concatenate([np.array([""], dtype=ids.dtype), ids]).astype(object)  # index 0 = padding
        self._lookup = SortedLookup(ids, np.arange(1, len(ids) + 1))
        self._new: dict[str, int] = {}  # ids first seen through the API
        self._new_ids: list[str] = []
        self._lock = threading.Lock()
        self._load_metadata(store)

    @property
    def size(self) -> int:
        """Indices in use, padding included."""
        return len(self._ids) + len(self._new_ids)

    # -- ids ----------------------------------------------------------------------------------
    def indices(self, ids: Sequence[str], add: bool = False) -> np.ndarray:
        """Catalogue index per id; unknown ids give 0, or a new index with ``add=True``."""
        out = self._lookup.get(ids)
        missing = np.flatnonzero(out < 0)
        with self._lock:
            for i in missing:
                key = ids[i]
                if key not in self._new and add:
                    self._new[key] = self.size
                    self._new_ids.append(key)
                out[i] = self._new.get(key, 0)
        return out

    def item_id(self, index: int) -> str:
        base = len(self._ids)
        return str(self._ids[index]) if index < base else self._new_ids[index - base]

    def is_model_item(self, indices: np.ndarray) -> np.ndarray:
        return (indices >= 1) & (indices <= self.n_model)

    # -- metadata -----------------------------------------------------------------------------
    def _load_metadata(self, store: EventStore) -> None:
        con = store.con
        n = len(self._ids)
        table = pa.table({"item_id": pa.array(self._ids[1:].astype(str)), "idx": np.arange(1, n, dtype=np.int64)})
        con.register("_serve_catalog", table)
        try:
            meta = con.sql(
                """WITH ev AS (SELECT item_id, mode(category) AS category FROM events
                               WHERE category IS NOT NULL GROUP BY item_id)
                SELECT c.idx, ev.category, i.category_path, i.brand, i.price
                FROM _serve_catalog c LEFT JOIN ev USING (item_id) LEFT JOIN items i USING (item_id)"""
            ).to_arrow_table()
            pairs = con.sql(
                """WITH ev AS (SELECT item_id, mode(category) AS category FROM events
                               WHERE category IS NOT NULL GROUP BY item_id),
                labels AS (SELECT c.idx, ev.category AS label FROM _serve_catalog c JOIN ev USING (item_id)
                           UNION SELECT c.idx, unnest(i.category_path) FROM _serve_catalog c
                           JOIN items i USING (item_id))
                SELECT label, list(idx ORDER BY idx) AS idx FROM labels WHERE label IS NOT NULL GROUP BY label"""
            ).to_arrow_table()
        finally:
            con.unregister("_serve_catalog")
        idx = meta.column("idx").to_numpy()
        self.category = np.full(n, None, dtype=object)
        self.category[idx] = meta.column("category").to_numpy(zero_copy_only=False)
        self.category_path = np.full(n, None, dtype=object)
        # fromiter keeps each path a list object (np.array would make a 2-D array of equal-length paths)
        paths = meta.column("category_path").to_pylist()
        self.category_path[idx] = np.fromiter(paths, dtype=object, count=len(paths))
        self.brand = np.full(n, None, dtype=object)
        self.brand[idx] = meta.column("brand").to_numpy(zero_copy_only=False)
        self.price = np.full(n, np.nan)
        self.price[idx] = meta.column("price").fill_null(np.nan).to_numpy(zero_copy_only=False)
        self.category_items: dict[str, np.ndarray] = {
            label: np.asarray(items, dtype=np.int64)
            for label, items in zip(pairs.column("label").to_pylist(), pairs.column("idx").to_pylist(), strict=True)
        }

    def info(self, index: int) -> ItemInfo:
        if index >= len(self._ids):
            return ItemInfo(item_id=self.item_id(index))
        price = float(self.price[index])
        return ItemInfo(item_id=self.item_id(index), category=self.category[index],
                        category_path=self.category_path[index], brand=self.brand[index],
                        price=None if np.isnan(price) else price)

    def category_mask(self, categories: Sequence[str], size: int) -> np.ndarray:
        """bool (size,): items of index < size in any of ``categories`` (any level of the path)."""
        mask = np.zeros(size, dtype=bool)
        for label in categories:
            items = self.category_items.get(label)
            if items is not None:
                mask[items[items < size]] = True
        return mask

    def categories(self) -> list[str]:
        return sorted(self.category_items)
