"""Taobao UserBehavior (Tianchi 649): CSV without header ``user,item,category,behavior,ts``.

Behaviours keep their source names (pv / cart / fav / buy); the cleaning step maps them.
Timestamps are Unix seconds; the category id goes to ``category``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.generic import read_delimited

COLUMNS = ["user_id", "item_id", "category", "event_type", "timestamp"]


def read_taobao(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    return read_delimited(
        con,
        path,
        ReadOptions(
            mapping=ColumnMapping(category="category"),
            header=False,
            column_names=COLUMNS,
            delimiter=",",
            encoding=options.encoding,
            timestamp_unit=TimestampUnit.SECONDS,
        ),
    )
