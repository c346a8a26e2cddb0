"""Item attribute tokens for the models: category levels, brand and free attribute ids.

Tokens come from the store's ``items`` table (``category_path`` levels as ``cat1:Beauty``,
``cat2:Beauty/Skin``, ...; ``brand:X``; each of ``attributes`` as ``attr:X``) and, for items the
table lacks, the most frequent ``category`` of their events (``cat:X``: Taobao, many event logs).
The result is a dense (n_items + 1, A) int matrix aligned with an item vocabulary (row 0 =
padding), 0 = no token; tokens seen on a single item carry no shared signal and are dropped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from shopseq.data.vocab import Vocabulary

__all__ = ["ItemAttributes", "item_attributes"]


@dataclass
class ItemAttributes:
    matrix: np.ndarray  # int32 (n_items + 1, width): token ids, 0 = none
    tokens: list[str]  # token id t -> tokens[t - 1]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def width(self) -> int:
        return int(self.matrix.shape[1])

    def coverage(self) -> float:
        """Share of items with at least one token."""
        rows = self.matrix[1:]
        return float((rows > 0).any(axis=1).mean()) if len(rows) else 0.0


def item_attributes(con: duckdb.DuckDBPyConnection, item_vocab: Vocabulary, max_per_item: int = 8,
                    min_items_per_token: int = 2) -> ItemAttributes:
    """Attribute tokens of every item of ``item_vocab`` from the store behind ``con``."""
    name = f"_shopseq_attr_iv_{uuid.uuid4().hex}"
    con.register(name, pa.table({"item_id": item_vocab.ids,
                                 "i": pa.array(np.arange(1, len(item_vocab) + 1, dtype=np.int64))}))
    try:
        pairs = con.sql(f"""
            WITH from_items AS (
                SELECT item_id, 'cat' || l.level || ':' || array_to_string(category_path[1:l.level], '/') AS token
                FROM items, (SELECT unnest(range(1, 9)) AS level) l
                WHERE category_path IS NOT NULL AND len(category_path) >= l.level
                UNION ALL SELECT item_id, 'brand:' || brand FROM items WHERE brand IS NOT NULL AND brand <> ''
                UNION ALL SELECT item_id, 'attr:' || unnest(attributes) FROM items WHERE attributes IS NOT NULL
            ),
            from_events AS (  -- only for items the items table does not describe
                SELECT item_id, 'cat:' || mode(category) AS token FROM events
                WHERE category IS NOT NULL AND item_id NOT IN (SELECT item_id FROM from_items)
                GROUP BY item_id
            ),
            raw AS (SELECT DISTINCT v.i, t.token FROM (SELECT * FROM from_items UNION ALL SELECT * FROM from_events) t
                    JOIN {name} v USING (item_id) WHERE t.token IS NOT NULL),
            shared AS (SELECT token FROM raw GROUP BY token HAVING count(*) >= {int(min_items_per_token)}),
            kept AS (SELECT i, token, row_number() OVER (PARTITION BY i ORDER BY token) AS slot
                     FROM raw JOIN shared USING (token))
            SELECT i, token, slot FROM kept WHERE slot <= {int(max_per_item)} ORDER BY token, i
        """).to_arrow_table()
    finally:
        con.unregister(name)
    token_col = pairs.column("token").to_numpy(zero_copy_only=False).astype(str)
    tokens, token_ids = np.unique(token_col, return_inverse=True)
    rows = pairs.column("i").to_numpy().astype(np.int64)
    slots = pairs.column("slot").to_numpy().astype(np.int64) - 1
    width = max(int(slots.max()) + 1, 1) if len(slots) else 1
    matrix = np.zeros((len(item_vocab) + 1, width), dtype=np.int32)
    matrix[rows, slots] = token_ids.astype(np.int32) + 1
    return ItemAttributes(matrix=matrix, tokens=[str(t) for t in tokens])

