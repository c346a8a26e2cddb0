"""YOOCHOOSE (RecSys Challenge 2015) clicks, in two layouts told apart by the first line:

* session-rec prepared files: TSV with a header ``SessionId ItemId Time`` (Unix seconds, possibly
  fractional). Seconds are turned into ms text here so sub-second order survives.
* the raw challenge files, comma separated without header: ``yoochoose-clicks.dat``
  (``session,ISO time,item,category``) and ``yoochoose-buys.dat`` (``session,ISO time,item,price,
  quantity``), told apart by their field count.

There are no users: the session is the unit, so the session id is also the user id.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited
from shopseq.data.formats.shared import derive, first_line, header_columns, pick, seconds_to_ms

_CLICKS = ["session_id", "timestamp", "item_id", "category"]
_BUYS = ["session_id", "timestamp", "item_id", "price", "quantity"]


def read_yoochoose(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    line = first_line(path, options.encoding)
    delim = "\t" if "\t" in line else ","
    fields = line.split(delim)
    if not fields[0].strip().strip('"').isdigit():
        return _read_prepared(con, path, options, line, delim)
    names = _BUYS if len(fields) >= 5 else _CLICKS
    raw = read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(
                user_id="session_id",
                event_type=None,
                session_id="session_id",
                **{f: f for f in ("category", "price", "quantity") if f in names},
            ),
            header=False,
            column_names=names,
            delimiter=",",
            encoding=options.encoding,
            timestamp_unit=TimestampUnit.ISO,
        ),
    )
    if names is _BUYS:
        event = "purchase"
        raw.notes.append(
            "raw yoochoose-buys layout (ISO time); price/quantity 0 mean unknown in this dataset"
        )
    else:
        event = "view"
        raw.notes.append("raw yoochoose-clicks layout (ISO time); category 'S' is a special offer, '0' none")
    con.execute(f"UPDATE {raw.table} SET event_type = '{event}'")
    return raw


def _read_prepared(
    con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions, line: str, delim: str
) -> RawBatch:
    cols = header_columns(line, delim)
    session = pick(cols, "sessionid", "session")
    item = pick(cols, "itemid", "item")
    time = pick(cols, "time", "timestamp", "ts")
    if not (session and item and time):
        raise ValueError(
            f"{path}: expected a header with SessionId, ItemId and Time; found {', '.join(cols.values())}"
        )
    raw = read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(user_id=session, item_id=item, timestamp=time, event_type=None),
            header=True,
            delimiter=delim,
            encoding=options.encoding,
        ),
    )
    batch = derive(
        con,
        raw,
        {
            "user_id": "user_id",
            "session_id": "user_id",
            "item_id": "item_id",
            "timestamp": seconds_to_ms("timestamp"),
            "event_type": "'view'",
        },
        TimestampUnit.MILLISECONDS,
    )
    batch.notes.append("session-rec layout: Time (Unix seconds) converted to ms; sessions stand in for users")
    return batch
