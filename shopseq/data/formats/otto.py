"""OTTO (Kaggle 2022) sessions: JSON lines ``{"session": int, "events": [{"aid", "ts", "type"}]}``.

Each line is one session; its events are unnested in SQL and all keep the session's line as
``src_row``. Sessions have no user, so the session id is both ``user_id`` and ``session_id``.
``ts`` is Unix milliseconds; ``type`` keeps the source names (clicks / carts / orders).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_jsonl
from shopseq.data.formats.sasrec import derive

_EVENT_SHAPE = '[{"aid": "VARCHAR", "ts": "VARCHAR", "type": "VARCHAR"}]'


def read_otto(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    # The generic JSONL reader numbers lines and rejects malformed ones; it hands the events array
    # back as JSON text in the ``item_id`` slot, which is unnested below.
    sessions = read_jsonl(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(user_id="session", item_id="events", timestamp=None, event_type=None),
            encoding=options.encoding,
        ),
    )
    # A session whose events are missing or not an array would vanish in the unnest: reject it.
    con.execute(
        f"""INSERT INTO {sessions.rejects_table}
        SELECT src_row, 'missing_columns', 'events', item_id FROM {sessions.table}
        WHERE item_id IS NULL OR json_type(item_id) <> 'ARRAY'"""
    )
    source = f"""(SELECT src_row, session, unnest(evs) AS e, unnest(range(len(evs))) AS pos
        FROM (SELECT src_row, user_id AS session, from_json(item_id, '{_EVENT_SHAPE}') AS evs
              FROM {sessions.table} WHERE json_type(item_id) = 'ARRAY'))"""
    batch = derive(
        con,
        sessions,
        {
            "user_id": "session",
            "session_id": "session",
            "item_id": "e.aid",
            "timestamp": "e.ts",
            "event_type": "e.type",
        },
        TimestampUnit.MILLISECONDS,
        source=source,
        order="src_row, pos",
    )
    return batch
