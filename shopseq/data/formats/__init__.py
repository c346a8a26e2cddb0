"""Source formats: the registry of readers, by the name users pass on the command line.

Public formats fix their own layout (only ``ReadOptions.encoding`` is taken from the caller);
the generic formats (csv, tsv, jsonl, parquet) follow the caller's options: column mapping,
header, delimiter, encoding and timestamp unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from shopseq.data.formats.amazon import read_s3rec
from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit
from shopseq.data.formats.diginetica import read_diginetica
from shopseq.data.formats.generic import read_generic
from shopseq.data.formats.movielens import read_movielens
from shopseq.data.formats.otto import read_otto
from shopseq.data.formats.recbole import read_recbole
from shopseq.data.formats.sasrec import read_sasrec
from shopseq.data.formats.taobao import read_taobao
from shopseq.data.formats.yoochoose import read_yoochoose

Reader = Callable[[duckdb.DuckDBPyConnection, Path, ReadOptions], RawBatch]


@dataclass(frozen=True)
class FormatInfo:
    name: str
    reader: Reader
    description: str  # one line, shown by ``--help``
    generic: bool = False  # True: honours the caller's column mapping and layout options


def _generic(fmt: str) -> Reader:
    def reader(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
        return read_generic(con, path, fmt, options)

    reader.__name__ = f"read_{fmt}"
    return reader


_ENTRIES = (
    FormatInfo("csv", _generic("csv"), "comma-separated text (optionally .gz) with a column mapping", True),
    FormatInfo("tsv", _generic("tsv"), "tab-separated text (optionally .gz) with a column mapping", True),
    FormatInfo("jsonl", _generic("jsonl"), "JSON lines, one event object per line, with a key mapping", True),
    FormatInfo("parquet", _generic("parquet"), "Parquet with native column types and a column mapping", True),
    FormatInfo(
        "s3rec",
        read_s3rec,
        "Amazon S3-Rec '<Name>.txt[.gz]' (user item item ...); uses <Name>_time / _item2attributes siblings",
    ),
    FormatInfo("sasrec", read_sasrec, "SASRec 'user item' lines in time order (ordinal timestamps)"),
    FormatInfo(
        "taobao", read_taobao, "Taobao UserBehavior CSV user,item,category,behavior,ts (pv/cart/fav/buy)"
    ),
    FormatInfo(
        "yoochoose",
        read_yoochoose,
        "YOOCHOOSE clicks: session-rec TSV 'SessionId ItemId Time' or raw clicks/buys .dat",
    ),
    FormatInfo(
        "diginetica", read_diginetica, "DIGINETICA ';'-CSV item views or purchases (date + ms offset)"
    ),
    FormatInfo("otto", read_otto, "OTTO JSON-lines sessions {session, events: [{aid, ts, type}]}"),
    FormatInfo(
        "movielens", read_movielens, "MovieLens ratings: u.data, ratings.csv or ratings.dat (as reviews)"
    ),
    FormatInfo("recbole", read_recbole, "RecBole atomic .inter TSV with 'name:type' header"),
)

FORMATS: dict[str, FormatInfo] = {info.name: info for info in _ENTRIES}


def format_help() -> str:
    """One line per format, for ``--help`` texts."""
    width = max(map(len, FORMATS))
    return "\n".join(f"{name.ljust(width)}  {info.description}" for name, info in FORMATS.items())


def read_source(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: ReadOptions | None = None
) -> RawBatch:
    """Read ``path`` in format ``fmt`` into temp tables of ``con``."""
    info = FORMATS.get(fmt.strip().lower())
    if info is None:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}")
    return info.reader(con, path, options or ReadOptions())


__all__ = [
    "FORMATS",
    "ColumnMapping",
    "FormatInfo",
    "RawBatch",
    "ReadOptions",
    "TimestampUnit",
    "format_help",
    "read_source",
]
