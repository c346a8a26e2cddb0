"""``POST /events``: the posted events go through the ingest cleaning SQL (``typed_table``, the same
rules, reasons and event-type aliases as ``shopseq ingest``) and are appended in ONE transaction:
events, rejects, the service's batch row, ``next_seq`` and the store version (so derived caches
see the change). Exact duplicates, in the request or already in the store, are dropped and counted.

The user id arrives pseudonymised: the raw id never reaches the store, not even in rejects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from shopseq.data.cleaning import REASON_FIELDS, CleaningPolicy, typed_table
from shopseq.data.formats.base import TimestampUnit, temp_name
from shopseq.data.store import EventStore
from shopseq.serving.schemas import EventIn, RejectedEvent

SOURCE = "api:POST /events"
_NULLABLE = ("session_id", "category", "price", "quantity")


@dataclass
class AppendResult:
    item_ids: list[str]  # accepted events, in request order
    types: np.ndarray
    timestamps: np.ndarray
    duplicates: int
    rejected: list[RejectedEvent]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def raw_table(pseudonym: str, events: list[EventIn], now_ms: int) -> pa.Table:
    """All fields as text, as a file reader would hand them to the cleaning step."""
    n = len(events)
    columns: dict[str, list[str | None]] = {
        "user_id": [pseudonym] * n,
        "item_id": [e.item_id for e in events],
        "timestamp": [str(now_ms) if e.timestamp is None else str(e.timestamp) for e in events],
        "event_type": [e.event_type for e in events],
        "session_id": [e.session_id for e in events],
        "category": [e.category for e in events],
        "price": [_text(e.price) for e in events],
        "quantity": [_text(e.quantity) for e in events],
    }
    table = pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})
    order = pa.array(np.arange(n, dtype=np.int64))
    return table.append_column("src_row", order).append_column("ord", order)


class EventWriter:
    def __init__(self, store: EventStore, policy: CleaningPolicy) -> None:
        self.store = store
        self.policy = policy
        self._batch_id: int | None = None  # one batch row per service run, created on first use

    def append(self, pseudonym: str, events: list[EventIn]) -> AppendResult:
        con = self.store.con
        raw, typed = temp_name("api_raw"), temp_name("api_typed")
        now_ms = int(time.time() * 1000)
        con.register(raw, raw_table(pseudonym, events, now_ms))
        try:
            typed_table(con, raw, typed, TimestampUnit.AUTO, self.policy, now_ms=now_ms, order_column="ord")
            return self._commit(pseudonym, typed, len(events))
        finally:
            con.execute(f"DROP TABLE IF EXISTS {typed}")
            con.unregister(raw)

    def _commit(self, pseudonym: str, typed: str, n: int) -> AppendResult:
        con = self.store.con
        rejected_rows = con.execute(
            f"SELECT src_row, reason FROM {typed} WHERE reason IS NOT NULL ORDER BY src_row").fetchall()
        key = "item_id, timestamp, event_type, session_id, category, price, quantity"
        same = " AND ".join([f"e.{c} = n.{c}" for c in ("item_id", "timestamp", "event_type")]
                            + [f"e.{c} IS NOT DISTINCT FROM n.{c}" for c in _NULLABLE])
        con.execute("BEGIN TRANSACTION")
        created = self._batch_id is None
        try:
            batch_id = self._ensure_batch()
            next_seq = int(self.store.get_meta("next_seq") or 0)
            inserted = con.execute(
                f"""INSERT INTO events
                SELECT $user AS user_id, n.item_id, n.timestamp, n.event_type, n.session_id, n.category,
                       n.price, n.quantity, {next_seq} + n.src_order AS seq, {batch_id} AS batch_id
                FROM (SELECT * FROM {typed} WHERE reason IS NULL
                      QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY src_order) = 1) n
                ANTI JOIN (SELECT * FROM events WHERE user_id = $user) e ON {same}
                RETURNING item_id, event_type, timestamp, seq""",
                {"user": pseudonym},
            ).fetchall()
            inserted.sort(key=lambda row: row[3])  # by seq: request order
            if rejected_rows:
                con.execute(
                    f"""INSERT INTO rejects SELECT {batch_id}, '{SOURCE}', src_row, reason,
                        CASE reason {" ".join(f"WHEN '{r}' THEN '{f}'" for r, f in REASON_FIELDS.items())} END,
                        to_json({{user_id: user_raw, item_id: item_id, timestamp: ts_text, event_type: et_text,
                                  session_id: session_id, category: category, price: price_text,
                                  quantity: qty_text}})::VARCHAR
                    FROM {typed} WHERE reason IS NOT NULL"""
                )
            accepted = len(inserted)
            duplicates = n - len(rejected_rows) - accepted
            con.execute(
                "UPDATE batches SET rows_in = rows_in + ?, accepted = accepted + ?, rejected = rejected + ?, "
                "duplicates = duplicates + ?, finished_at = now() WHERE batch_id = ?",
                [n, accepted, len(rejected_rows), duplicates, batch_id],
            )
            self.store.set_meta("next_seq", str(next_seq + n))
            if accepted:
                self.store.bump_version()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            if created:  # the batch row went with the rollback
                self._batch_id = None
            raise
        return AppendResult(
            item_ids=[row[0] for row in inserted],
            types=np.array([row[1] for row in inserted], dtype=np.int64),
            timestamps=np.array([row[2] for row in inserted], dtype=np.int64),
            duplicates=duplicates,
            rejected=[RejectedEvent(index=int(i), reason=r, field=REASON_FIELDS.get(r)) for i, r in rejected_rows],
        )

    def _ensure_batch(self) -> int:
        if self._batch_id is None:
            con = self.store.con
            batch_id = int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchall()[0][0])
            con.execute(
                "INSERT INTO batches VALUES (?, ?, 'api', NULL, 0, 0, 0, 0, 'ms', NULL, now())",
                [batch_id, SOURCE],
            )
            self._batch_id = batch_id
        return self._batch_id
