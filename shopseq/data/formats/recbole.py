"""RecBole atomic interaction files (``.inter``): TSV whose header tokens are ``name:type``.

Fields are matched on the part before ':' (``user_id``, ``item_id``, ``timestamp``,
``session_id``); the types are ignored since everything is read as text. Session datasets
without ``user_id`` use the session as the user. RecBole timestamps are Unix seconds, often
written as floats, so they are converted to ms text here; a file without ``timestamp`` gets
ordinal timestamps from line order within each user. A ``rating`` field marks the events as
reviews; otherwise ``event_type`` stays NULL and the cleaning default applies.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited
from shopseq.data.formats.shared import derive, first_line, seconds_to_ms


def read_recbole(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    header = first_line(path, options.encoding).split("\t")
    by_name = {tok.partition(":")[0].strip(): tok.strip() for tok in header}
    user = by_name.get("user_id") or by_name.get("session_id")
    item = by_name.get("item_id")
    if not (user and item):
        raise ValueError(
            f"{path}: a RecBole .inter file needs user_id (or session_id) and item_id fields; "
            f"header: {', '.join(header)}"
        )
    ts = by_name.get("timestamp")
    raw = read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(
                user_id=user,
                item_id=item,
                timestamp=ts,
                event_type=None,
                session_id=by_name.get("session_id"),
            ),
            header=True,
            delimiter="\t",
            encoding=options.encoding,
        ),
    )
    fields = {"user_id": "user_id", "item_id": "item_id", "session_id": "session_id"}
    if ts:
        fields["timestamp"], unit = seconds_to_ms("timestamp"), TimestampUnit.MILLISECONDS
    else:
        fields["timestamp"] = "row_number() OVER (PARTITION BY user_id ORDER BY src_row)"
        unit = TimestampUnit.ORDINAL
    if "rating" in by_name:
        fields["event_type"] = "'review'"
    batch = derive(con, raw, fields, unit)
    batch.notes.append(
        ("timestamps (s) converted to ms" if ts else "no timestamp field: ordinal timestamps")
        + ("; ratings read as reviews" if "rating" in by_name else "; no event type: the default applies")
    )
    return batch
