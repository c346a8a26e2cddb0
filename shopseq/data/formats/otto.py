"""OTTO (Kaggle 2022) sessions: JSON lines ``{"session": int, "events": [{"aid", "ts", "type"}]}``.

Each line is one session; its events are unnested in SQL and all keep the session's line as
``src_row``. Sessions have no user, so the session id is both ``user_id`` and ``session_id``.
``ts`` is Unix milliseconds; ``type`` keeps the source names (clicks / carts / orders).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import RawBatch, ReadOptions, TimestampUnit, temp_name
from shopseq.data.formats.generic import read_lines
from shopseq.data.formats.shared import derive

_EVENT_SHAPE = '[{"aid": "VARCHAR", "ts": "VARCHAR", "type": "VARCHAR"}]'


def read_otto(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    lines, rejects = read_lines(con, path, options.encoding)
    parsed = temp_name("otto")
    # CASE keeps the JSON functions away from invalid lines (they would raise, not return NULL).
    con.execute(
        f"""CREATE TEMP TABLE {parsed} AS
        SELECT src_row, line, j, json_extract_string(j, '$.session') AS session,
               CASE WHEN json_type(j, '$.events') = 'ARRAY' THEN json_extract(j, '$.events') END AS events
        FROM (SELECT src_row, line,
                     CASE WHEN coalesce(json_valid(line), false) THEN json(line) END AS j FROM {lines})"""
    )
    # Malformed lines, and sessions whose events would vanish in the unnest, become rejects.
    con.execute(
        f"""INSERT INTO {rejects}
        SELECT src_row, CASE WHEN bad THEN 'malformed_json' ELSE 'missing_columns' END,
               CASE WHEN bad THEN NULL ELSE 'events' END, line
        FROM (SELECT *, j IS NULL OR json_type(j) <> 'OBJECT' AS bad FROM {parsed})
        WHERE bad OR events IS NULL"""
    )
    con.execute(f"DROP TABLE {lines}")
    source = f"""(SELECT src_row, session, unnest(evs) AS e, unnest(range(len(evs))) AS pos
        FROM (SELECT src_row, session, from_json(events, '{_EVENT_SHAPE}') AS evs
              FROM {parsed} WHERE json_type(j) = 'OBJECT' AND events IS NOT NULL))"""
    return derive(
        con,
        RawBatch(str(path), parsed, TimestampUnit.MILLISECONDS, rejects_table=rejects),
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
