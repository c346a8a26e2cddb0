"""MovieLens ratings, in the three GroupLens layouts (told apart by the first line):

* ``u.data`` (ml-100k): tab separated, no header, ``user item rating ts``;
* ``ratings.csv`` (ml-latest, ml-20m, ml-25m): header ``userId,movieId,rating,timestamp``;
* ``ratings.dat`` (ml-1m, ml-10m): ``user::item::rating::ts``, no header (DuckDB takes the
  two-character delimiter as is).

A rating is a review: event type 'review'. Timestamps are Unix seconds. The rating value has no
canonical column and is not kept.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited
from shopseq.data.formats.shared import first_line, header_columns, pick

_NAMES = ["user_id", "item_id", "rating", "timestamp"]


def read_movielens(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    line = first_line(path, options.encoding)
    if "::" in line:
        layout = ReadOptions(header=False, column_names=_NAMES, delimiter="::")
    elif "\t" in line:
        layout = ReadOptions(header=False, column_names=_NAMES, delimiter="\t")
    else:
        cols = header_columns(line, ",")
        user, item, ts = pick(cols, "userid"), pick(cols, "movieid", "itemid"), pick(cols, "timestamp")
        if not (user and item and ts):
            raise ValueError(
                f"{path}: not a MovieLens ratings file (expected u.data, ratings.dat or a ratings.csv "
                f"header userId,movieId,rating,timestamp); first line: {line[:200]!r}"
            )
        layout = ReadOptions(
            mapping=ColumnMapping(user_id=user, item_id=item, timestamp=ts), header=True, delimiter=","
        )
    raw = read_delimited(
        con,
        path,
        layout.model_copy(
            update={
                "mapping": layout.mapping.model_copy(update={"event_type": None}),
                "encoding": options.encoding,
                "timestamp_unit": TimestampUnit.SECONDS,
            }
        ),
    )
    con.execute(f"UPDATE {raw.table} SET event_type = 'review'")
    raw.notes.append("ratings read as reviews; rating values are not kept")
    return raw
