"""The cleaning policy: one set of rules for every source, applied as DuckDB SQL.

Per field, in this order (the first broken rule is the row's reject reason):

=====================  ==================================================================
rule                   what happens
=====================  ==================================================================
trimming               text values are trimmed; an empty string counts as missing
missing_user_id        rejected
missing_item_id        rejected
missing_timestamp      rejected
bad_timestamp          rejected: not a number nor an ISO-8601 date/time
impossible_timestamp   rejected: at or before the epoch, before ``min_timestamp_ms``, or more
                       than ``max_future_ms`` after the moment of ingest (ordinal sources: < 0)
missing_event_type     replaced by ``default_event_type`` (default ``view``); rejected if None
unknown_event_type     rejected: the name is not in ``event_aliases`` (case-insensitive)
bad_price              rejected (or nulled with ``invalid_optional='null'``): not a finite
                       number >= 0
bad_quantity           rejected (or nulled): not a whole number > 0
duplicate              exact duplicates (every canonical field equal) keep their first row;
                       rows already in the store are dropped; both are counted, not rejected
kcore_filter           optional: rows of users / items with fewer than k events (iterated to a
                       fixed point on the batch) are rejected with this reason
=====================  ==================================================================
"""

from __future__ import annotations

import time
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopseq.data.formats.base import TimestampUnit, sql_str
from shopseq.data.schema import DEFAULT_EVENT_ALIASES, EVENT_TYPE_NAMES, EventType

_DAY_MS = 86_400_000
_TEXT_TYPES = ("VARCHAR",)
_TIME_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "DATE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S")


class CleaningPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_event_type: str | None = Field("view", description="used when the event type is missing")
    event_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EVENT_ALIASES))
    min_timestamp_ms: int = Field(1, description="earliest acceptable timestamp (ms since epoch)")
    max_future_ms: int = Field(_DAY_MS, description="how far past the ingest moment a timestamp may lie")
    invalid_optional: Literal["reject", "null"] = "reject"
    kcore: int | None = Field(None, ge=1, description="keep only users and items with >= k events")

    @field_validator("default_event_type")
    @classmethod
    def _known_default(cls, value: str | None) -> str | None:
        if value is not None and value not in EVENT_TYPE_NAMES:
            raise ValueError(f"default_event_type must be one of {EVENT_TYPE_NAMES}, got {value!r}")
        return value

    @field_validator("event_aliases")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v not in EVENT_TYPE_NAMES}
        if bad:
            raise ValueError(f"event type aliases must map to {EVENT_TYPE_NAMES}; bad: {bad}")
        return {k.strip().lower(): v for k, v in value.items()}

    def with_aliases(self, pairs: list[str]) -> CleaningPolicy:
        """Add CLI ``source=canonical`` pairs, e.g. ``pv=view``."""
        aliases = dict(self.event_aliases)
        for pair in pairs:
            name, sep, target = pair.partition("=")
            if not sep:
                raise ValueError(f"bad event mapping {pair!r}: expected SOURCE_NAME=TYPE")
            aliases[name.strip().lower()] = target.strip().lower()
        return self.model_copy(update={"event_aliases": self._known_targets(aliases)})


def _column_types(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}


def _text(col: str, dtype: str) -> str:
    if dtype in _TEXT_TYPES:
        return f"nullif(trim({col}), '')"
    return f"CAST({col} AS VARCHAR)"


_MS_LIMIT = 9e18  # |ms| beyond this cannot be a BIGINT; such rows must be rejected, not fail the file


def _ms(expr: str) -> str:
    """A DOUBLE ms expression as BIGINT, clamped: an overflowing, infinite or NaN number becomes an
    out-of-range moment (``impossible_timestamp``) instead of a cast error that fails the whole file."""
    limit = f"{_MS_LIMIT:.0f}"
    return (f"CAST(CASE WHEN ({expr}) IS NULL THEN NULL WHEN isnan({expr}) OR abs({expr}) >= {limit} THEN {limit} "
            f"ELSE round({expr}) END AS BIGINT)")


def _timestamp_ms(col: str, dtype: str, unit: TimestampUnit) -> str:
    """Expression: canonical ms, NULL when unparsable."""
    if dtype in _TIME_TYPES:
        return f"epoch_ms({col}::TIMESTAMPTZ)"
    number = f"TRY_CAST({col} AS DOUBLE)" if dtype in _TEXT_TYPES else f"CAST({col} AS DOUBLE)"
    exact = f"TRY_CAST({col} AS BIGINT)"  # integers must not lose precision through DOUBLE
    # exact seconds * 1000 only where the product fits; larger ones go the clamped DOUBLE way
    # (a range, not abs(): abs of the smallest BIGINT overflows and would fail the whole file)
    exact_s = f"CASE WHEN {exact} BETWEEN -8999999999999999 AND 8999999999999999 THEN {exact} * 1000 END"
    by_unit = {
        TimestampUnit.SECONDS: f"coalesce({exact_s}, {_ms(f'{number} * 1000')})",
        TimestampUnit.MILLISECONDS: f"coalesce({exact}, {_ms(number)})",
        TimestampUnit.MICROSECONDS: f"coalesce({exact} // 1000, {_ms(f'{number} / 1000')})",
        TimestampUnit.ORDINAL: exact,
    }
    iso = f"epoch_ms(TRY_CAST({col} AS TIMESTAMPTZ))" if dtype in _TEXT_TYPES else "NULL::BIGINT"
    if unit in by_unit:
        return by_unit[unit]
    if unit is TimestampUnit.ISO:
        return iso
    # auto: numbers by magnitude (us > 1e14 > ms > 1e11 > s), anything else as ISO text
    return f"""CASE WHEN {number} IS NULL THEN {iso}
        WHEN abs({number}) >= 1e14 THEN {_ms(f'{number} / 1000')}
        WHEN abs({number}) >= 1e11 THEN {_ms(number)}
        ELSE {_ms(f'{number} * 1000')} END"""


def typed_table(
    con: duckdb.DuckDBPyConnection,
    raw_table: str,
    out_table: str,
    unit: TimestampUnit,
    policy: CleaningPolicy,
    now_ms: int | None = None,
    order_column: str = "rowid",
    materialize: bool = True,
) -> None:
    """Coerce ``raw_table`` into ``out_table`` with one ``reason`` per row (NULL = valid).

    ``materialize=False`` makes ``out_table`` a view: every reader then streams from the source
    again, which for large Parquet files beats copying it into memory (and spilling) once.
    ``src_order`` is the row's position in the source (``order_column`` of the raw table).
    """
    types = _column_types(con, raw_table)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    alias_rows = ", ".join(
        f"({sql_str(name)}, {EventType[target.upper()].value})" for name, target in policy.event_aliases.items()
    )
    default_code = (
        EventType[policy.default_event_type.upper()].value if policy.default_event_type else "NULL"
    )
    lo = -1 if unit is TimestampUnit.ORDINAL else max(policy.min_timestamp_ms, 1) - 1
    hi = now_ms + policy.max_future_ms if unit is not TimestampUnit.ORDINAL else 2**62
    price_ok = "price IS NOT NULL AND isfinite(price) AND price >= 0"
    qty_ok = "quantity IS NOT NULL AND quantity > 0"
    # an optional field that fails coercion either rejects the row or is nulled, by policy
    strict = policy.invalid_optional == "reject"
    con.execute(
        f"""CREATE TEMP {'TABLE' if materialize else 'VIEW'} {out_table} AS
        WITH aliases(name, code) AS (VALUES {alias_rows}),
        coerced AS (
            SELECT r.{order_column} AS src_order, r.src_row,
                {_text("r.user_id", types["user_id"])} AS user_raw,
                {_text("r.item_id", types["item_id"])} AS item_id,
                {_text("r.timestamp", types["timestamp"])} AS ts_text,
                {_timestamp_ms("r.timestamp", types["timestamp"], unit)} AS timestamp,
                lower({_text("r.event_type", types["event_type"])}) AS et_text,
                {_text("r.session_id", types["session_id"])} AS session_id,
                {_text("r.category", types["category"])} AS category,
                {_text("r.price", types["price"])} AS price_text,
                TRY_CAST(r.price AS DOUBLE) AS price,
                {_text("r.quantity", types["quantity"])} AS qty_text,
                TRY_CAST(r.quantity AS INTEGER) AS quantity
            FROM {raw_table} r
        )
        SELECT c.* EXCLUDE (price, quantity),
            CASE WHEN c.et_text IS NULL THEN {default_code} ELSE a.code END::UTINYINT AS event_type,
            CASE WHEN {price_ok} THEN price END AS price,
            CASE WHEN {qty_ok} THEN quantity END AS quantity,
            CASE
                WHEN c.user_raw IS NULL THEN 'missing_user_id'
                WHEN c.item_id IS NULL THEN 'missing_item_id'
                WHEN c.ts_text IS NULL THEN 'missing_timestamp'
                WHEN c.timestamp IS NULL THEN 'bad_timestamp'
                WHEN c.timestamp <= {lo} OR c.timestamp > {hi} THEN 'impossible_timestamp'
                WHEN c.et_text IS NULL AND {default_code} IS NULL THEN 'missing_event_type'
                WHEN c.et_text IS NOT NULL AND a.code IS NULL THEN 'unknown_event_type'
                WHEN {strict} AND c.price_text IS NOT NULL AND NOT ({price_ok}) THEN 'bad_price'
                WHEN {strict} AND c.qty_text IS NOT NULL AND NOT ({qty_ok}) THEN 'bad_quantity'
            END AS reason
        FROM coerced c LEFT JOIN aliases a ON c.et_text = a.name"""
    )


REASON_FIELDS = {
    "missing_user_id": "user_id",
    "missing_item_id": "item_id",
    "missing_timestamp": "timestamp",
    "bad_timestamp": "timestamp",
    "impossible_timestamp": "timestamp",
    "missing_event_type": "event_type",
    "unknown_event_type": "event_type",
    "bad_price": "price",
    "bad_quantity": "quantity",
    "kcore_filter": "user_id,item_id",
}


def kcore_mask(con: duckdb.DuckDBPyConnection, table: str, k: int, max_rounds: int = 50) -> int:
    """Mark rows of ``table`` (valid rows: ``reason IS NULL``) below the k-core; returns rows marked.

    Iterates users-then-items until nothing changes, as the usual k-core preprocessing does.
    """
    marked = 0
    for _ in range(max_rounds):
        changed = 0
        for key in ("user_raw", "item_id"):
            n = con.execute(
                f"""UPDATE {table} SET reason = 'kcore_filter'
                WHERE reason IS NULL AND {key} IN (
                    SELECT {key} FROM {table} WHERE reason IS NULL GROUP BY {key} HAVING count(*) < {k})"""
            ).fetchall()[0][0]
            changed += n
        marked += changed
        if changed == 0:
            break
    return marked
