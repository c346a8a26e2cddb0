"""DIGINETICA (CIKM Cup 2016): ``;``-separated with a header.

* item views (``train-item-views.csv``): ``session_id;user_id;item_id;timeframe;eventdate``
* purchases (``train-purchases.csv``): ``sessionId;userId;timeframe;eventdate;ordernumber;itemId``

Columns are found by name (case and '_' ignored), so both spellings work. The time of an event is
its session's (first) date, UTC midnight, plus ``timeframe``, the ms offset from the session
start; it is computed here and returned in ms. Anonymous sessions (``user_id`` 'NA' or empty) get the user id
``s:<session>`` so each stays its own sequence without colliding with a numeric user id.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited
from shopseq.data.formats.shared import derive, first_line, header_columns, pick

ANON_PREFIX = "s:"

# The session's first date + offset when both parse; otherwise the raw text that failed (date
# first), so that the cleaning step rejects the row as a bad timestamp and shows what was there.
# ``timeframe`` counts from the session start, and a session crossing midnight has rows dated the
# next day: adding each row's own date would open a false 24 h gap inside the session.
_TIMESTAMP_SQL = """CASE
    WHEN TRY_CAST(trim(eventdate) AS DATE) IS NOT NULL AND TRY_CAST(trim(timeframe) AS BIGINT) IS NOT NULL
        THEN (epoch_ms(min(TRY_CAST(trim(eventdate) AS DATE)) OVER (PARTITION BY session_id)::TIMESTAMP)
              + TRY_CAST(trim(timeframe) AS BIGINT))::VARCHAR
    WHEN TRY_CAST(trim(eventdate) AS DATE) IS NULL THEN eventdate
    ELSE timeframe END"""


def read_diginetica(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    cols = header_columns(first_line(path, options.encoding), ";")
    session = pick(cols, "sessionid")
    user = pick(cols, "userid")
    item = pick(cols, "itemid")
    timeframe = pick(cols, "timeframe")
    date = pick(cols, "eventdate")
    if not (session and item and timeframe and date):
        raise ValueError(
            f"{path}: expected a DIGINETICA header with session_id, user_id, item_id, timeframe, "
            f"eventdate; found {', '.join(cols.values())}"
        )
    purchases = pick(cols, "ordernumber") is not None
    # Slots are borrowed to carry the raw columns into SQL; the canonical table is derived below.
    raw = read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(
                user_id=user, item_id=item, timestamp=date, event_type=timeframe, session_id=session
            ),
            header=True,
            delimiter=";",
            encoding=options.encoding,
        ),
    )
    source = (
        f"(SELECT src_row, user_id, item_id, session_id, timestamp AS eventdate, event_type AS timeframe "
        f"FROM {raw.table})"
    )
    batch = derive(
        con,
        raw,
        {
            "user_id": f"""CASE WHEN user_id IS NULL OR trim(user_id) IN ('', 'NA')
                THEN '{ANON_PREFIX}' || session_id ELSE user_id END""",
            "item_id": "item_id",
            "session_id": "session_id",
            "timestamp": _TIMESTAMP_SQL,
            "event_type": "'purchase'" if purchases else "'view'",
        },
        TimestampUnit.MILLISECONDS,
        source=source,
    )
    batch.notes.append(
        f"timestamp = session's first eventdate (UTC midnight) + timeframe ms; "
        f"anonymous users -> '{ANON_PREFIX}<session>'"
    )
    return batch
