"""Ingest: read a source, clean it by the policy, pseudonymise users, append to the store.

Transactional: everything that changes the store happens between one BEGIN and one COMMIT, so a
crash half-way leaves the store as it was (DuckDB discards the uncommitted WAL on reopen).
Idempotent: a file already ingested with the same format, mapping and policy is recognised by its
fingerprint and adds nothing; rows already in the store are dropped as duplicates either way.
Every input row is accounted for: rows_in = accepted + rejected + duplicates.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from pydantic import BaseModel, Field

from shopseq.data.cleaning import REASON_FIELDS, CleaningPolicy, kcore_mask, typed_table
from shopseq.data.formats import read_source
from shopseq.data.formats.base import ColumnMapping, RawBatch, ReadOptions, TimestampUnit, sql_str, temp_name
from shopseq.data.store import PARQUET_MARKER, EventStore

_NULLABLE = ("session_id", "category", "price", "quantity")


class IngestReport(BaseModel):
    source_file: str
    format: str
    batch_id: int | None = None
    skipped: bool = Field(False, description="the same file was ingested before; nothing was added")
    rows_in: int = 0
    accepted: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    duplicates_in_file: int = 0
    duplicates_in_store: int = 0
    users: int = 0
    items: int = 0
    items_with_attributes: int = 0
    rejects_file: str | None = None
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def duplicates(self) -> int:
        return self.duplicates_in_file + self.duplicates_in_store

    def balanced(self) -> bool:
        return self.rows_in == self.accepted + self.rejected_total + self.duplicates


def fingerprint(path: Path, fmt: str, options: ReadOptions, policy: CleaningPolicy) -> str:
    """Content hash of the file plus everything that decides how it is read and cleaned."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    h.update(fmt.encode())
    h.update(options.model_dump_json().encode())
    h.update(policy.model_dump_json().encode())
    return h.hexdigest()


def _export_key(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """The key fingerprint of a shopseq Parquet export, or None for any other file."""
    rows = con.execute(
        f"SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata({sql_str(path)})"
    ).fetchall()
    return dict(rows).get(PARQUET_MARKER)


def ingest_file(
    store: EventStore,
    path: Path | str,
    fmt: str = "csv",
    options: ReadOptions | None = None,
    policy: CleaningPolicy | None = None,
    on_step: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest one file; see the module docstring for the guarantees."""
    path = Path(path)
    options = options or ReadOptions()
    policy = policy or CleaningPolicy()
    step = on_step or (lambda _msg: None)
    started = time.perf_counter()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    con = store.con

    pseudonymised = False
    if fmt == "parquet" and (key := _export_key(con, path)) is not None:
        if key != store.key.fingerprint:
            raise ValueError(
                f"{path} is a shopseq export pseudonymised with another workspace's key ({key}); "
                "its user ids cannot be matched to this workspace's pseudonyms"
            )
        # our own export: ids are pseudonyms already, columns are canonical, time is ms
        pseudonymised = True
        options = options.model_copy(
            update={
                "mapping": ColumnMapping(**{f: f for f, _ in ColumnMapping().pairs()}),
                "timestamp_unit": TimestampUnit.MILLISECONDS,
            }
        )

    step("fingerprinting")
    fp = fingerprint(path, fmt, options, policy)
    report = IngestReport(source_file=str(path), format=fmt)
    done = con.execute("SELECT batch_id FROM batches WHERE fingerprint = ?", [fp]).fetchall()
    if done:
        report.batch_id, report.skipped = int(done[0][0]), True
        report.seconds = time.perf_counter() - started
        return report

    step("reading")
    batch = read_source(con, path, fmt, options)
    typed = temp_name("typed")
    # k-core needs to update rows in place; otherwise the cleaned rows stay a view over the source
    materialize = bool(policy.kcore) or not batch.table_is_view
    try:
        step("cleaning")
        typed_table(con, batch.table, typed, batch.timestamp_unit, policy,
                    order_column=batch.order_column, materialize=materialize)
        if policy.kcore:
            step(f"{policy.kcore}-core filtering")
            kcore_mask(con, typed, policy.kcore)
        _commit_batch(store, batch, typed, fmt, fp, pseudonymised, report, step)
    finally:
        con.execute(f"DROP {'TABLE' if materialize else 'VIEW'} IF EXISTS {typed}")
        batch.drop(con)
    report.seconds = time.perf_counter() - started
    con.execute("UPDATE batches SET seconds = ? WHERE batch_id = ?", [report.seconds, report.batch_id])
    return report


_ROW_KEY = ("user_raw", "item_id", "timestamp", "event_type", "session_id", "category", "price", "quantity")


def _masked_line(batch: RawBatch, pseudo: Callable[[str], str]) -> str:
    """SQL for a parser-rejected line as kept: its user field pseudonymised like every stored id.
    When the reader cannot say where the user id is, or the line is too short to hold it, the
    line is not kept at all (NULL; the file and line number still point to it): a raw id must
    never reach the store."""
    if batch.reject_user_field is None or batch.reject_delimiter is None:
        return "NULL"
    i, delim = batch.reject_user_field, sql_str(batch.reject_delimiter)
    parts = f"string_split(raw, {delim})"
    masked = f"list_concat({parts}[1:{i}], [{pseudo(f'{parts}[{i + 1}]')}], {parts}[{i + 2}:])"
    return f"CASE WHEN len({parts}) > {i} THEN array_to_string({masked}, {delim}) END"


def _commit_batch(
    store: EventStore,
    batch: RawBatch,
    typed: str,
    fmt: str,
    fp: str,
    pseudonymised: bool,
    report: IngestReport,
    step: Callable[[str], None],
) -> None:
    """Write one cleaned batch. Streams over ``typed`` a few times instead of materialising it:
    (1) users and row counts, (2) exact duplicates via a 64-bit row hash (only colliding rows are
    compared in full), then inside the transaction (3) rejects and (4) the insert."""
    con = store.con

    def pseudo(column: str) -> str:
        return column if pseudonymised else store.key.sql_expr(column)

    users, dup_keys, drop = temp_name("users"), temp_name("dupkeys"), temp_name("drop")
    key = ", ".join(_ROW_KEY)
    step("pseudonymising users")
    con.execute(
        f"""CREATE TEMP TABLE {users} AS
        SELECT user_raw, {pseudo("user_raw")} AS user_id, n_valid, n_rejected, last_order FROM (
            SELECT user_raw, count(*) FILTER (WHERE reason IS NULL) AS n_valid,
                   count(*) FILTER (WHERE reason IS NOT NULL) AS n_rejected, max(src_order) AS last_order
            FROM {typed} GROUP BY user_raw)"""
    )
    typed_rows, valid_rows, n_rejected, n_users, span = (
        int(v or 0) for v in con.execute(
            f"""SELECT sum(n_valid + n_rejected), sum(n_valid), sum(n_rejected),
                       count(*) FILTER (WHERE n_valid > 0), coalesce(max(last_order), -1) + 1 FROM {users}"""
        ).fetchall()[0]
    )
    step("finding duplicates")
    con.execute(
        f"""CREATE TEMP TABLE {dup_keys} AS SELECT hash({key}) AS h FROM {typed}
        WHERE reason IS NULL GROUP BY h HAVING count(*) > 1"""
    )
    dup_file = 0
    if store.count(dup_keys):
        # rows equal in every field to an earlier row (hash collisions are told apart here)
        con.execute(
            f"""CREATE TEMP TABLE {drop} AS SELECT src_order FROM (
                SELECT src_order, row_number() OVER (PARTITION BY {key} ORDER BY src_order) AS copy
                FROM {typed} WHERE reason IS NULL AND hash({key}) IN (SELECT h FROM {dup_keys}))
            WHERE copy > 1"""
        )
        dup_file = store.count(drop)
    store_empty = store.count() == 0
    step("writing")
    con.execute("BEGIN TRANSACTION")
    try:
        batch_id = int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchall()[0][0])
        next_seq = int(store.get_meta("next_seq") or 0)
        report.batch_id = batch_id
        if batch.rejects_table:
            con.execute(
                f"""INSERT INTO rejects SELECT {batch_id}, {sql_str(batch.source_file)}, src_row, reason,
                    field, {_masked_line(batch, pseudo)} FROM {batch.rejects_table}"""
            )
        if n_rejected:
            fields_case = " ".join(f"WHEN '{r}' THEN '{f}'" for r, f in REASON_FIELDS.items())
            # the rejected row's values as read, with the user id pseudonymised like everything else
            con.execute(
                f"""INSERT INTO rejects
                SELECT {batch_id}, {sql_str(batch.source_file)}, t.src_row, t.reason,
                       CASE t.reason {fields_case} END,
                       to_json({{user_id: {pseudo("t.user_raw")},
                                 item_id: t.item_id, timestamp: t.ts_text, event_type: t.et_text,
                                 session_id: t.session_id, category: t.category, price: t.price_text,
                                 quantity: t.qty_text}})::VARCHAR
                FROM {typed} t WHERE t.reason IS NOT NULL"""
            )
        new_rows = f"""SELECT u.user_id, t.item_id, t.timestamp, t.event_type, t.session_id, t.category,
                   t.price, t.quantity, {next_seq} + t.src_order AS seq, {batch_id} AS batch_id
            FROM {typed} t JOIN {users} u ON t.user_raw = u.user_raw
            WHERE t.reason IS NULL{f" AND t.src_order NOT IN (SELECT src_order FROM {drop})" if dup_file else ""}"""
        if not store_empty:
            # rows the store already holds (an overlapping file) are duplicates, not new events
            same = " AND ".join(
                [f"e.{c} = n.{c}" for c in ("user_id", "item_id", "timestamp", "event_type")]
                + [f"e.{c} IS NOT DISTINCT FROM n.{c}" for c in _NULLABLE]
            )
            new_rows = f"SELECT n.* FROM ({new_rows}) n ANTI JOIN events e ON {same}"
        inserted = int(con.execute(f"INSERT INTO events {new_rows}").fetchall()[0][0])
        if batch.items_table:
            con.execute(f"DELETE FROM items WHERE item_id IN (SELECT item_id FROM {batch.items_table})")
            report.items_with_attributes = int(
                con.execute(f"INSERT INTO items SELECT * FROM {batch.items_table}").fetchall()[0][0]
            )
        rejected = dict(
            con.execute(
                f"SELECT reason, count(*) FROM rejects WHERE batch_id = {batch_id} GROUP BY reason ORDER BY 2 DESC"
            ).fetchall()
        )
        parse_rejects = store.count(batch.rejects_table) if batch.rejects_table else 0
        report.rows_in = typed_rows + parse_rejects
        report.accepted = inserted
        report.rejected = {k: int(v) for k, v in rejected.items()}
        report.duplicates_in_file = dup_file
        report.duplicates_in_store = valid_rows - dup_file - inserted
        report.users = n_users
        report.items = int(con.execute(
            f"SELECT count(DISTINCT item_id) FROM events WHERE batch_id = {batch_id}").fetchall()[0][0])
        con.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, now())",
            [batch_id, batch.source_file, fmt, fp, report.rows_in, report.accepted, report.rejected_total,
             report.duplicates, batch.timestamp_unit.value],
        )
        store.set_meta("next_seq", str(next_seq + span))
        if inserted:
            store.bump_version()
        rejects_tmp = store.write_rejects_file(batch_id, final=False) if report.rejected_total else None
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in (users, dup_keys, drop):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    if rejects_tmp is not None:
        final = store.rejects_file(batch_id)
        os.replace(rejects_tmp, final)
        report.rejects_file = str(final)
