"""The synthetic shop's ground truth, joined to the store's pseudonymised user ids.

The shop writes users.parquet, campaigns.parquet and campaign_responses.parquet next to its
events; user ids there are the raw ids, so they are pseudonymised with the workspace key (in SQL,
the same HMAC the ingest used) before they can be matched to the store's users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shopseq.data.privacy import PseudonymKey
from shopseq.data.vocab import Vocabulary


@dataclass
class SyntheticTruth:
    users: pa.Table  # user_id (pseudonym), user_type, ...
    campaigns: pa.Table  # campaign_id, name, kind, start_ms, end_ms, item_ids, category, lift, discount
    responses: pa.Table  # campaign_id, user_id (pseudonym), responded, purchased_promoted

    @classmethod
    def load(cls, folder: Path, key: PseudonymKey) -> SyntheticTruth:
        folder = Path(folder)
        for name in ("users", "campaigns", "campaign_responses"):
            if not (folder / f"{name}.parquet").exists():
                raise FileNotFoundError(f"{folder} has no {name}.parquet: not a synthetic shop folder")
        con = duckdb.connect()
        try:
            con.register("u", pq.read_table(folder / "users.parquet"))
            con.register("r", pq.read_table(folder / "campaign_responses.parquet"))
            users = con.sql(f"SELECT * REPLACE ({key.sql_expr('user_id')} AS user_id) FROM u").to_arrow_table()
            responses = con.sql(f"SELECT * REPLACE ({key.sql_expr('user_id')} AS user_id) FROM r").to_arrow_table()
        finally:
            con.close()
        return cls(users, pq.read_table(folder / "campaigns.parquet"), responses)

    def user_types(self, user_vocab: Vocabulary) -> np.ndarray:
        """Planted type code per user of the vocabulary (-1 where unknown) and the type names."""
        rows = user_vocab.encode(self.users.column("user_id"))
        codes = self.users.column("user_type").combine_chunks().dictionary_encode().indices.to_numpy()
        out = np.full(len(user_vocab), -1, dtype=np.int64)
        out[rows[rows >= 0]] = codes[rows >= 0]
        return out

    def campaign_labels(self, campaign_id: str, user_vocab: Vocabulary) -> dict[str, np.ndarray]:
        """``responded`` / ``purchased_promoted`` per user of the vocabulary (False where unknown)."""
        mask = np.asarray(self.responses.column("campaign_id").to_numpy(zero_copy_only=False) == campaign_id)
        sub = self.responses.filter(pa.array(mask))
        rows = user_vocab.encode(sub.column("user_id"))
        out = {}
        for name in ("responded", "purchased_promoted"):
            values = np.zeros(len(user_vocab), dtype=bool)
            values[rows[rows >= 0]] = sub.column(name).to_numpy(zero_copy_only=False)[rows >= 0]
            out[name] = values
        return out
