"""Each user's most recent events, held in memory so a request needs no store query.

At startup one DuckDB query keeps the last ``limit`` events of every user (catalogue indices, event
codes, ms timestamps) as flat numpy arrays with a start and count per user; users are found by
binary search on their pseudonyms. Events posted since go to a per-user overlay (also capped at
``limit``), so the next request sees them at once; a user's history is the two merged by time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from shopseq.data.store import EventStore
from shopseq.serving.catalog import Catalog
from shopseq.serving.lookup import SortedLookup


@dataclass
class EventArrays:
    items: np.ndarray  # int64 catalogue indices (0 = unknown item)
    types: np.ndarray  # int64 EventType codes
    timestamps: np.ndarray  # int64 ms

    @classmethod
    def empty(cls) -> EventArrays:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), z.copy())

    def __len__(self) -> int:
        return len(self.items)

    def merged(self, later: EventArrays, limit: int) -> EventArrays:
        """Both, ordered by time (ties: ``self`` first, then ``later`` in order), last ``limit``."""
        if not len(later):
            return self.tail(limit)
        items = np.concatenate([self.items, later.items])
        types = np.concatenate([self.types, later.types])
        ts = np.concatenate([self.timestamps, later.timestamps])
        order = np.argsort(ts, kind="stable")[-limit:]
        return EventArrays(items[order], types[order], ts[order])

    def tail(self, limit: int) -> EventArrays:
        return EventArrays(self.items[-limit:], self.types[-limit:], self.timestamps[-limit:])


class RecentHistories:
    def __init__(self, store: EventStore, catalog: Catalog, limit: int) -> None:
        self.limit = limit
        con = store.con
        con.sql(
            f"""CREATE OR REPLACE TEMP TABLE _serve_recent AS
            SELECT *, row_number() OVER (ORDER BY user_id, timestamp, seq) - 1 AS pos FROM (
                SELECT user_id, item_id, event_type, timestamp, seq FROM events
                QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY timestamp DESC, seq DESC) <= {int(limit)})"""
        )
        try:
            events = con.sql(
                "SELECT item_id, event_type, timestamp FROM _serve_recent ORDER BY pos").to_arrow_table()
            users = con.sql(
                "SELECT user_id, min(pos) AS start, count(*) AS n FROM _serve_recent GROUP BY user_id"
            ).to_arrow_table()
        finally:
            con.execute("DROP TABLE IF EXISTS _serve_recent")
        self._items = self._encode_items(catalog, events)
        self._types = events.column("event_type").to_numpy().astype(np.int64)
        self._timestamps = events.column("timestamp").to_numpy().astype(np.int64)
        self._starts = users.column("start").to_numpy().astype(np.int64)
        self._counts = users.column("n").to_numpy().astype(np.int64)
        self._users = SortedLookup(users.column("user_id"))
        self._overlay: dict[str, EventArrays] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _encode_items(catalog: Catalog, events: pa.Table) -> np.ndarray:
        if events.num_rows == 0:
            return np.zeros(0, dtype=np.int64)
        # unique ids first: the catalogue lookup then runs once per item, not once per event
        ids = events.column("item_id").combine_chunks().dictionary_encode()
        codes = catalog.indices(ids.dictionary.to_pylist())
        return codes[ids.indices.to_numpy(zero_copy_only=False)].astype(np.int64)

    @property
    def n_users(self) -> int:
        return len(self._users) + sum(1 for u in self._overlay if self._users.get_one(u) < 0)

    def sample_users(self, n: int) -> list[str]:
        return [u for u in self._users.keys_sample(n) if self.knows(u)]  # forgotten users left out

    def knows(self, pseudonym: str) -> bool:
        row = self._users.get_one(pseudonym)
        return (row >= 0 and self._counts[row] > 0) or pseudonym in self._overlay

    def forget(self, pseudonym: str) -> int:
        """Drop a user's events from memory (stored window and overlay); returns how many."""
        removed = 0
        with self._lock:
            row = self._users.get_one(pseudonym)
            if row >= 0:
                lo, n = int(self._starts[row]), int(self._counts[row])
                self._items[lo:lo + n] = 0  # not just hidden: the values go too
                self._types[lo:lo + n] = 0
                self._timestamps[lo:lo + n] = 0
                self._counts[row] = 0
                removed += n
            overlay = self._overlay.pop(pseudonym, None)
            removed += 0 if overlay is None else len(overlay)
        return removed

    def get(self, pseudonym: str) -> EventArrays:
        """The user's last ``limit`` events, oldest first (empty for an unknown user)."""
        row = self._users.get_one(pseudonym)
        if row >= 0:
            lo = int(self._starts[row])
            hi = lo + int(self._counts[row])
            stored = EventArrays(self._items[lo:hi], self._types[lo:hi], self._timestamps[lo:hi])
        else:
            stored = EventArrays.empty()
        with self._lock:
            recent = self._overlay.get(pseudonym)
        return stored if recent is None else stored.merged(recent, self.limit)

    def append(self, pseudonym: str, events: EventArrays) -> None:
        """Events just committed to the store; visible to the next ``get``."""
        with self._lock:
            current = self._overlay.get(pseudonym, EventArrays.empty())
            # the last `limit` of the overlay suffice: older ones can never be in the merged tail
            self._overlay[pseudonym] = current.merged(events, self.limit)
