"""Generic readers: delimited text (CSV/TSV), JSON lines and Parquet, with a column mapping.

Every record keeps its physical line (text) or row (Parquet) number so rejects can be traced back.
DuckDB's parallel CSV reader numbers the records it *returns*; the lines it skipped (records it
rejected, blank lines) are known separately, so the physical line of the k-th returned record is
recovered with one ASOF join instead of a per-row pass.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from shopseq.data.formats.base import (
    ColumnMapping,
    RawBatch,
    ReadOptions,
    TimestampUnit,
    canonical_select,
    ident,
    sql_str,
    temp_name,
)

_CHUNK = 16 << 20
# Never present in real text: the CSV scanner hands back each whole line as one column.
_LINE_DELIMITER = "\x1f"


def blank_lines(path: Path) -> np.ndarray:
    """1-based numbers of empty lines (DuckDB skips them without a trace), streamed in chunks."""
    opener = gzip.open if path.suffix == ".gz" else open
    found: list[np.ndarray] = []
    lines_before = 0  # newlines seen in earlier chunks
    prev_tail = b"\n"  # the virtual newline before line 1: an empty first line counts as blank
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            data = np.frombuffer(prev_tail[-2:].rjust(2, b"\0") + chunk, dtype=np.uint8)
            nl = np.flatnonzero(data == 10)
            # a line is blank when its newline directly follows the previous newline (or '\r' after it)
            is_blank = (data[nl - 1] == 10) | ((data[nl - 1] == 13) & (data[np.maximum(nl - 2, 0)] == 10))
            is_blank &= nl >= 2  # positions 0-1 are the carried-over tail
            idx = np.flatnonzero(is_blank)
            # line number of the newline at nl[i]: newlines before it (in this chunk) + 1
            in_chunk = np.flatnonzero(nl >= 2)
            order = np.searchsorted(in_chunk, idx)
            found.append(lines_before + order + 1)
            lines_before += int((nl >= 2).sum())
            prev_tail = chunk[-2:] if len(chunk) >= 2 else (prev_tail + chunk)[-2:]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


def _attach_line_numbers(
    con: duckdb.DuckDBPyConnection, numbered: str, skipped: np.ndarray, header_lines: int
) -> tuple[str, str]:
    """A view over ``numbered`` (which has ``rec``, 1-based) that adds ``src_row``, and the helper
    table it reads (the caller drops both when done).

    ``skipped``: physical line numbers that produced no record. For sorted skipped data lines
    s_0 < s_1 < ..., record k lands after s_i exactly when s_i - i <= k, so its line is
    header_lines + k + #{i : s_i - i <= k}.
    """
    view, steps = temp_name("lined"), temp_name("steps")
    data_lines = np.unique(skipped[skipped > header_lines]) - header_lines
    if len(data_lines) == 0:
        con.execute(f"CREATE TEMP VIEW {view} AS SELECT rec + {header_lines} AS src_row, * FROM {numbered}")
        return view, steps
    adj = data_lines - np.arange(len(data_lines))
    # runs of adjacent skipped lines share one adj value: keep the count at the end of each run
    last_of_run = np.r_[adj[1:] != adj[:-1], True]
    table = pa.table({"adj": adj[last_of_run], "n": np.flatnonzero(last_of_run) + 1})
    con.register(f"{steps}_arrow", table)
    con.execute(f"CREATE TEMP TABLE {steps} AS SELECT * FROM {steps}_arrow")
    con.unregister(f"{steps}_arrow")
    con.execute(
        f"""CREATE TEMP VIEW {view} AS
        SELECT r.rec + {header_lines} + coalesce(s.n, 0) AS src_row, r.*
        FROM {numbered} r ASOF LEFT JOIN {steps} s ON r.rec >= s.adj"""
    )
    return view, steps


def _csv_rejects(con: duckdb.DuckDBPyConnection, rejects: str, target: str) -> np.ndarray:
    """Copy DuckDB's parser rejects into our rejects shape; return their line numbers."""
    con.execute(
        f"""CREATE TEMP TABLE {target} AS
        SELECT line AS src_row,
               CASE any_value(error_type)
                   WHEN 'INVALID ENCODING' THEN 'invalid_encoding'
                   WHEN 'TOO MANY COLUMNS' THEN 'too_many_columns'
                   WHEN 'MISSING COLUMNS' THEN 'missing_columns'
                   WHEN 'UNQUOTED VALUE' THEN 'unparsable_line'
                   ELSE 'unparsable_line' END AS reason,
               string_agg(DISTINCT column_name, ',') AS field,
               trim(any_value(csv_line), chr(10) || chr(13)) AS raw
        FROM {rejects} GROUP BY line"""
    )
    return con.execute(f"SELECT src_row FROM {target}").fetchnumpy()["src_row"].astype(np.int64)


def read_delimited(
    con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions, default_delimiter: str = ","
) -> RawBatch:
    """CSV/TSV (optionally gzipped) with or without a header, all columns read as text."""
    delim = options.delimiter or default_delimiter
    numbered, scan, rejects, parse_rej = (temp_name(p) for p in ("csv", "scan", "rej", "parse_rej"))
    args = [
        "all_varchar=true",
        f"header={str(options.header).lower()}",
        f"delim={sql_str(delim)}",
        "quote='\"'",
        "escape='\"'",
        "store_rejects=true",
        f"rejects_table={sql_str(rejects)}",
        f"rejects_scan={sql_str(scan)}",
        f"encoding={sql_str(options.encoding)}",
    ]
    if options.column_names:
        args.append("names=[" + ", ".join(sql_str(n) for n in options.column_names) + "]")
    con.execute(
        f"CREATE TEMP TABLE {numbered} AS SELECT row_number() OVER () AS rec, * "
        f"FROM read_csv({sql_str(path)}, {', '.join(args)})"
    )
    parse_lines = _csv_rejects(con, rejects, parse_rej)
    con.execute(f"DROP TABLE IF EXISTS {rejects}; DROP TABLE IF EXISTS {scan}")
    header_lines = 1 if options.header else 0
    columns = [c for c in _columns(con, numbered) if c != "rec"]
    one_column = len(columns) == 1
    # DuckDB skips blank lines, except in a one-column file, where they come back as NULL records
    skipped = parse_lines if one_column else np.concatenate([parse_lines, blank_lines(path)])
    lined, steps = _attach_line_numbers(con, numbered, skipped, header_lines)
    not_blank = f" WHERE {ident(columns[0])} IS NOT NULL" if one_column else ""
    table = temp_name("raw")
    # the ASOF join may reorder rows; table order is the tie-break order (``seq``) downstream
    con.execute(
        f"CREATE TEMP TABLE {table} AS {canonical_select(options.mapping, columns, lined)}{not_blank} "
        "ORDER BY src_row"
    )
    con.execute(f"DROP VIEW {lined}; DROP TABLE {numbered}; DROP TABLE IF EXISTS {steps}")
    user_col = options.mapping.user_id
    return RawBatch(str(path), table, options.timestamp_unit, rejects_table=parse_rej,
                    reject_user_field=columns.index(user_col) if user_col in columns else None,
                    reject_delimiter=delim)


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
                      skip=0, delim={sql_str(_LINE_DELIMITER)}, quote='', escape='', store_rejects=true,
                      rejects_table={sql_str(rejects)}, rejects_scan={sql_str(scan)},
                      encoding={sql_str(encoding)})"""
    )
    lined, steps = _attach_line_numbers(con, numbered, _csv_rejects(con, rejects, parse_rej), 0)
    table = temp_name("lines")
    con.execute(
        f"CREATE TEMP TABLE {table} AS "
        f"SELECT src_row, line FROM {lined} WHERE trim(line) <> '' ORDER BY src_row"
    )
    con.execute(f"DROP VIEW {lined}; DROP TABLE {numbered}; DROP TABLE {rejects}; DROP TABLE {scan}")
    con.execute(f"DROP TABLE IF EXISTS {steps}")
    return table, parse_rej


def read_jsonl(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    """JSON lines: one object per line; ``mapping`` names top-level keys (or JSON paths ``$.a.b``).

    Lines are read as text first so that a malformed line is rejected with its number instead of
    failing the whole file.
    """
    lines_tbl, parse_rej = read_lines(con, path, options.encoding)
    con.execute(
        f"""INSERT INTO {parse_rej}
        SELECT src_row, 'malformed_json', NULL, line FROM {lines_tbl}
        WHERE NOT coalesce(json_valid(line), false) OR json_type(line) <> 'OBJECT'"""
    )
    fields = []
    for fld, key in options.mapping.pairs():
        if key is None:
            fields.append(f"NULL::VARCHAR AS {fld}")
        else:
            json_path = key if key.startswith("$") else "$." + ident(key)
            fields.append(f"json_extract_string(line, {sql_str(json_path)}) AS {fld}")
    table = temp_name("raw")
    con.execute(
        f"""CREATE TEMP TABLE {table} AS SELECT src_row, {', '.join(fields)} FROM {lines_tbl}
        WHERE coalesce(json_valid(line), false) AND json_type(line) = 'OBJECT' ORDER BY src_row"""
    )
    con.execute(f"DROP TABLE {lines_tbl}")
    return RawBatch(str(path), table, options.timestamp_unit, rejects_table=parse_rej)


def read_parquet(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    """Parquet with native column types, as a view over the file: no copy, no detour through text
    (the fast path for large logs)."""
    source = f"(SELECT file_row_number + 1 AS src_row, * FROM read_parquet({sql_str(path)}, file_row_number=true))"
    columns = _columns(con, source)
    view = temp_name("raw")
    con.execute(f"CREATE TEMP VIEW {view} AS {canonical_select(options.mapping, columns, source)}")
    return RawBatch(str(path), view, options.timestamp_unit, table_is_view=True, order_column="src_row")


def _columns(con: duckdb.DuckDBPyConnection, source: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]


def read_generic(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, options: ReadOptions | None = None
) -> RawBatch:
    options = options or ReadOptions()
    if fmt == "csv":
        return read_delimited(con, path, options, ",")
    if fmt == "tsv":
        return read_delimited(con, path, options, "\t")
    if fmt == "jsonl":
        return read_jsonl(con, path, options)
    if fmt == "parquet":
        return read_parquet(con, path, options)
    raise ValueError(f"not a generic format: {fmt}")


__all__ = [
    "ColumnMapping",
    "ReadOptions",
    "TimestampUnit",
    "blank_lines",
    "read_delimited",
    "read_generic",
    "read_jsonl",
    "read_lines",
    "read_parquet",
]
