"""SASRec-style ``user item`` text (one interaction per line, chronological within each user).

The files carry no clock, so timestamps are *ordinal*: the position of the line among the user's
lines. There is no event type either; the reader leaves ``event_type`` NULL so the cleaning step's
default event type applies (SASRec files mix sources: MovieLens ratings, Amazon reviews, Steam
plays, so no single literal would be right).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited
from shopseq.data.formats.shared import derive


def read_sasrec(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    """``user item`` per line, space separated; ordinal timestamps from line order within a user."""
    raw = read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(timestamp=None, event_type=None),
            header=False,
            column_names=["user_id", "item_id"],
            delimiter=" ",
            encoding=options.encoding,
        ),
    )
    batch = derive(
        con,
        raw,
        {
            "user_id": "user_id",
            "item_id": "item_id",
            "timestamp": "row_number() OVER (PARTITION BY user_id ORDER BY src_row)",
        },
        TimestampUnit.ORDINAL,
    )
    batch.notes.append(
        "no timestamps: ordinal positions within each user; no event type: the default applies"
    )
    return batch
