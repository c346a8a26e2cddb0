"""Small helpers the public-format readers share: layout detection from the first line, header
lookup, seconds -> ms text, and ``derive``, which rebuilds a reader's temp table into the
canonical columns in file order."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb

from shopseq.data.formats.base import RawBatch, TimestampUnit, temp_name
from shopseq.data.schema import SOURCE_FIELDS


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
    return RawBatch(batch.source_file, table, unit, batch.rejects_table, batch.items_table, list(batch.notes))
