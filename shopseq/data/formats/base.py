"""The contract between format readers and the cleaning step.

A reader loads one source file into a DuckDB temp table with columns named after the
canonical fields (``shopseq.data.schema.SOURCE_FIELDS``) plus ``src_row``, the 1-based line or
row of the record in its file. Nothing is coerced or dropped here: type coercion and every
validity rule live in one place (``shopseq.data.cleaning``), so all formats obey one policy.
Records the reader cannot even parse (too many columns, invalid encoding, malformed JSON) go to a
second temp table with their reason, so they are kept too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from shopseq.data.schema import SOURCE_FIELDS

_counter = itertools.count()


def temp_name(prefix: str) -> str:
    """A fresh temp-table name, so several reads can share one connection."""
    return f"{prefix}_{next(_counter)}"


class TimestampUnit(StrEnum):
    SECONDS = "s"
    MILLISECONDS = "ms"
    MICROSECONDS = "us"
    ISO = "iso"  # ISO-8601 date or date-time text; naive values are taken as UTC
    AUTO = "auto"  # numbers by magnitude (s / ms / us), anything else as ISO text
    ORDINAL = "ordinal"  # no clock: the value is a position in the user's sequence


class ColumnMapping(BaseModel):
    """Which source column feeds each canonical field (``None``: the source has no such column)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str | None = "user_id"
    item_id: str | None = "item_id"
    timestamp: str | None = "timestamp"
    event_type: str | None = "event_type"
    session_id: str | None = None
    category: str | None = None
    price: str | None = None
    quantity: str | None = None

    def pairs(self) -> list[tuple[str, str | None]]:
        return [(f, getattr(self, f)) for f in SOURCE_FIELDS]

    @classmethod
    def from_pairs(cls, pairs: list[str]) -> ColumnMapping:
        """Parse CLI ``field=column`` pairs on top of the defaults."""
        values: dict[str, str | None] = {}
        for pair in pairs:
            name, sep, column = pair.partition("=")
            if not sep or name.strip() not in SOURCE_FIELDS:
                raise ValueError(
                    f"bad mapping {pair!r}: expected FIELD=COLUMN with FIELD one of {', '.join(SOURCE_FIELDS)}"
                )
            values[name.strip()] = column.strip() or None
        return cls(**values)


class ReadOptions(BaseModel):
    """How to read a generic file (the public formats fill these in themselves)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mapping: ColumnMapping = Field(default_factory=ColumnMapping)
    delimiter: str | None = None  # None: ',' for csv, tab for tsv
    header: bool = True
    column_names: list[str] | None = None  # names for a file without a header
    encoding: str = "utf-8"  # also 'latin-1' or 'utf-16'
    timestamp_unit: TimestampUnit = TimestampUnit.AUTO


@dataclass
class RawBatch:
    """One source file read into temp tables of ``con``.

    ``table``: ``src_row BIGINT`` plus one column per canonical field, as the source typed it
    (text for text formats; native types from Parquet, which the cleaning step handles).
    ``rejects_table``: ``src_row BIGINT, reason VARCHAR, field VARCHAR, raw VARCHAR`` for records
    that could not be parsed at all (or ``None``).
    ``items_table``: optional item attributes with the columns of ``schema.ITEM_COLUMNS``.
    Row order of ``table`` is source order: it breaks timestamp ties (``seq``) downstream, so
    readers whose joins may reorder rows end their CREATE TABLE with ``ORDER BY``.
    """

    source_file: str
    table: str
    timestamp_unit: TimestampUnit
    rejects_table: str | None = None
    items_table: str | None = None
    notes: list[str] = field(default_factory=list)
    # ``table`` may be a view straight over the file (Parquet: no copy); its rows are then ordered
    # by ``order_column`` instead of by their position in a table (``rowid``)
    table_is_view: bool = False
    order_column: str = "rowid"
    # where the user id sits in an unparsable line (0-based field, delimiter), so ingest can
    # pseudonymise it before the line is kept; None: the line is not kept, only file + line number
    reject_user_field: int | None = None
    reject_delimiter: str | None = None

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DROP {'VIEW' if self.table_is_view else 'TABLE'} IF EXISTS {self.table}")
        for name in (self.rejects_table, self.items_table):
            if name:
                con.execute(f"DROP TABLE IF EXISTS {name}")


def sql_str(value: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def canonical_select(mapping: ColumnMapping, available: list[str], source: str) -> str:
    """``SELECT src_row, <col> AS user_id, ...`` over ``source``; missing fields become NULL.

    A mapped column that the file lacks is an error naming the file's columns, not a silent NULL.
    """
    parts = ["src_row"]
    for fld, column in mapping.pairs():
        if column is None:
            parts.append(f"NULL::VARCHAR AS {fld}")
        elif column in available:
            parts.append(f"{ident(column)} AS {fld}")
        else:
            raise ValueError(
                f"column {column!r} (mapped to {fld}) is not in the source; it has: {', '.join(available)}"
            )
    return f"SELECT {', '.join(parts)} FROM {source}"
