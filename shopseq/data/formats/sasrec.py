"""SASRec-style ``user item`` text (one interaction per line, chronological within each user).

The files carry no clock, so timestamps are *ordinal*: the position of the line among the user's
lines. There is no event type either; the reader leaves ``event_type`` NULL so the cleaning step's
default event type applies (SASRec files mix sources: MovieLens ratings, Amazon reviews, Steam
plays, so no single literal would be right).

This module also holds the small helpers the other public-format readers share: reading a file's
first line (for layout detection) and rebuilding a reader's temp table into the canonical columns.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit, sql_str, temp_name
from shopseq.data.formats.generic import _attach_line_numbers, _csv_rejects, read_delimited
from shopseq.data.schema import SOURCE_FIELDS

# Never present in real text: lets ``read_delimited`` hand back whole lines as one column.
LINE_DELIMITER = "\x1f"


def first_line(path: Path, encoding: str = "utf-8") -> str:
    """The first line of a (possibly gzipped) text file, without its newline or a BOM."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding=encoding, errors="replace") as f:
        return f.readline().rstrip("\r\n").lstrip("\ufeff")


def header_columns(line: str, delimiter: str) -> dict[str, str]:
    """Header names keyed by a normalised form (lower case, no '_' / spaces / quotes)."""
    names = [n.strip().strip('"') for n in line.split(delimiter)]
    return {n.lower().replace("_", "").replace(" ", ""): n for n in names}


def pick(columns: dict[str, str], *keys: str) -> str | None:
    """The name of the first header column whose normalised name is in ``keys``."""
    for key in keys:
        if key in columns:
            return columns[key]
    return None


def seconds_to_ms(expr: str) -> str:
    """SQL turning (possibly fractional) Unix-seconds text into ms text.

    Fractional seconds (session-rec, RecBole) would not survive an integer-seconds parse, so the
    conversion happens here; text that is not a number passes through unchanged, so the cleaning
    step still reports it as a bad timestamp with its raw value.
    """
    return f"coalesce(TRY_CAST(round(TRY_CAST({expr} AS DOUBLE) * 1000) AS BIGINT)::VARCHAR, {expr})"


def read_lines(con: duckdb.DuckDBPyConnection, path: Path, encoding: str = "utf-8") -> tuple[str, str]:
    """Temp tables ``(src_row, line)`` of the non-blank lines and ``rejects`` of unreadable ones.

    With a single column DuckDB returns inner blank lines as NULL records but (when sniffing)
    drops leading ones, so the generic blank-line correction does not fit here. Sniffing is
    switched off instead: then every physical line is one record, and only lines the parser
    rejects (invalid encoding) need the line-number correction.
    """
    numbered, rejects, scan, parse_rej = (temp_name(p) for p in ("lnum", "lrej", "lscan", "lparse_rej"))
    con.execute(
        f"""CREATE TEMP TABLE {numbered} AS SELECT row_number() OVER () AS rec, line
        FROM read_csv({sql_str(path)}, columns={{'line': 'VARCHAR'}}, header=false, auto_detect=false,
                      skip=0, delim={sql_str(LINE_DELIMITER)}, quote='', escape='', store_rejects=true,
                      rejects_table={sql_str(rejects)}, rejects_scan={sql_str(scan)},
                      encoding={sql_str(encoding)})"""
    )
    lined = _attach_line_numbers(con, numbered, _csv_rejects(con, rejects, parse_rej), 0)
    table = temp_name("lines")
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT src_row, line FROM {lined} WHERE trim(line) <> '' ORDER BY src_row"
    )
    con.execute(f"DROP VIEW {lined}; DROP TABLE {numbered}; DROP TABLE {rejects}; DROP TABLE {scan}")
    return table, parse_rej


def derive(
    con: duckdb.DuckDBPyConnection,
    batch: RawBatch,
    fields: dict[str, str],
    unit: TimestampUnit,
    source: str | None = None,
    order: str = "src_row",
) -> RawBatch:
    """Replace ``batch.table`` by ``SELECT src_row, <fields> FROM source`` in canonical order.

    ``fields`` maps canonical names to SQL expressions over ``source`` (default: the batch's own
    table); every value is cast to text and absent fields are NULL. Rows are written in ``order``
    so the table keeps file order even when the expressions use window functions or unnest.
    """
    unknown = set(fields) - set(SOURCE_FIELDS)
    if unknown:
        raise ValueError(f"not canonical fields: {', '.join(sorted(unknown))}")
    cols = ", ".join(
        f"CAST({fields[f]} AS VARCHAR) AS {f}" if f in fields else f"NULL::VARCHAR AS {f}"
        for f in SOURCE_FIELDS
    )
    table = temp_name("raw")
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT src_row, {cols} FROM {source or batch.table} ORDER BY {order}"
    )
    con.execute(f"DROP TABLE IF EXISTS {batch.table}")
    return RawBatch(
        batch.source_file, table, unit, batch.rejects_table, batch.items_table, list(batch.notes)
    )


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
    batch.notes.append("no timestamps: ordinal positions within each user; no event type: the default applies")
    return batch
