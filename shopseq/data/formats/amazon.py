"""Amazon review sequences as preprocessed by S3-Rec (``<Name>.txt[.gz]``: ``user item item ...``).

Every interaction is a review. Sibling files, when present, add:

* ``<Name>_time.txt[.gz]``: ``user t1 t2 ...`` in Unix seconds, aligned position by position with
  the same line of the sequence file (TiCoSeRec's files line up this way with S3-Rec's ids);
  without it timestamps are ordinal positions 1..n within the user's line.
* ``<Name>_item2attributes.json``: ``{"item": [attr_id, ...]}`` -> ``items_table.attributes``
  (ids kept as text; they are category levels and brand).
* ``<Name>_attribute_names.json``: ``{"attr_id": "name"}``, only mentioned in the notes.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopseq.data.formats.base import RawBatch, ReadOptions, TimestampUnit, sql_str, temp_name
from shopseq.data.formats.generic import read_lines
from shopseq.data.formats.shared import derive


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _sibling(path: Path, *names: str) -> Path | None:
    for name in names:
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _explode(con: duckdb.DuckDBPyConnection, lines_table: str) -> str:
    """``(src_row, user, pos, value)`` per token after the first of each line (pos from 1)."""
    out = temp_name("s3tok")
    # Parallel unnests of equal-length lists zip element by element, giving each token its position.
    con.execute(
        f"""CREATE TEMP TABLE {out} AS
        SELECT src_row, toks[1] AS user_id, unnest(toks[2:]) AS value, unnest(range(1, len(toks))) AS pos
        FROM (SELECT src_row, regexp_split_to_array(trim(line), '\\s+') AS toks FROM {lines_table})"""
    )
    return out


def _items_table(con: duckdb.DuckDBPyConnection, attrs: Path) -> str:
    table = temp_name("items")
    # JSON object -> MAP in one vectorised cast; attribute ids are kept as text.
    con.execute(
        f"""CREATE TEMP TABLE {table} AS
        SELECT key::VARCHAR AS item_id, NULL::VARCHAR[] AS category_path, NULL::VARCHAR AS brand,
               NULL::DOUBLE AS price, value::VARCHAR[] AS attributes
        FROM (SELECT unnest(map_entries(json(content)::MAP(VARCHAR, VARCHAR[])), recursive := true)
              FROM read_text({sql_str(attrs)}))"""
    )
    return table


def read_s3rec(con: duckdb.DuckDBPyConnection, path: Path, options: ReadOptions) -> RawBatch:
    """One user per line; events get the line as ``src_row`` and event type 'review'."""
    stem = _stem(path)
    lines_table, rejects_table = read_lines(con, path, options.encoding)
    lines = RawBatch(str(path), lines_table, TimestampUnit.ORDINAL, rejects_table=rejects_table)
    toks = _explode(con, lines_table)
    # A line with a user but no items carries no event: keep it visible as a reject.
    con.execute(
        f"""INSERT INTO {rejects_table}
        SELECT src_row, 'missing_columns', 'item_id', line FROM {lines_table}
        WHERE len(regexp_split_to_array(trim(line), '\\s+')) < 2"""
    )
    notes: list[str] = []
    time_file = _sibling(path, f"{stem}_time.txt.gz", f"{stem}_time.txt")
    if time_file is not None:
        times, times_rej = read_lines(con, time_file, options.encoding)
        time_toks = _explode(con, times)
        source = (
            f"(SELECT e.src_row, e.pos, e.user_id, e.value AS item_id, t.value AS ts, t.user_id AS t_user "
            f"FROM {toks} e LEFT JOIN {time_toks} t ON e.src_row = t.src_row AND e.pos = t.pos)"
        )
        unit = TimestampUnit.SECONDS
        ts_expr = "ts"
        bad_lines = con.execute(
            f"SELECT count(DISTINCT src_row) FROM {source} "
            "WHERE ts IS NULL OR t_user IS DISTINCT FROM user_id"
        ).fetchall()[0][0]
        n_rej = con.execute(f"SELECT count(*) FROM {times_rej}").fetchall()[0][0]
        notes.append(f"timestamps from {time_file.name} (Unix seconds, day granularity)")
        if bad_lines or n_rej:
            # Misaligned events keep a NULL timestamp, so cleaning rejects them with their line.
            notes.append(
                f"{bad_lines} line(s) whose time line is missing, shorter or for another user; "
                f"{n_rej} unparsable line(s) in {time_file.name}"
            )
    else:
        source = f"(SELECT src_row, pos, user_id, value AS item_id, NULL AS t_user FROM {toks})"
        unit = TimestampUnit.ORDINAL
        ts_expr = "pos"
        notes.append("no time file: ordinal timestamps (position within the user's line)")
    batch = derive(
        con,
        lines,
        {"user_id": "user_id", "item_id": "item_id", "timestamp": ts_expr, "event_type": "'review'"},
        unit,
        source=source,
        order="src_row, pos",
    )
    con.execute(f"DROP TABLE {toks}")
    if time_file is not None:
        con.execute(f"DROP TABLE {time_toks}; DROP TABLE {times}; DROP TABLE {times_rej}")
    attrs = _sibling(path, f"{stem}_item2attributes.json")
    if attrs is not None:
        batch.items_table = _items_table(con, attrs)
        notes.append(f"item attributes (ids) from {attrs.name}")
        names = _sibling(path, f"{stem}_attribute_names.json")
        if names is not None:
            n_names = con.execute(
                f"SELECT len(json_keys(content)) FROM read_text({sql_str(names)})"
            ).fetchall()[0][0]
            notes.append(f"names for {n_names} attribute ids in {names.name} (ids kept in items_table)")
    batch.notes.extend(notes)
    return batch
