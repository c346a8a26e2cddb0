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
    try:
        step("cleaning")
        typed_table(con, batch.table, typed, batch.timestamp_unit, policy)
        if policy.kcore:
            step(f"{policy.kcore}-core filtering")
            kcore_mask(con, typed, policy.kcore)
        step("writing")
        _commit_batch(store, batch, typed, fmt, fp, pseudonymised, report)
    finally:
        batch.drop(con)
        con.execute(f"DROP TABLE IF EXISTS {typed}")
    report.seconds = time.perf_counter() - started
    con.execute("UPDATE batches SET seconds = ? WHERE batch_id = ?", [report.seconds, report.batch_id])
    return report


def _commit_batch(
    store: EventStore,
    batch: RawBatch,
    typed: str,
    fmt: str,
    fp: str,
    pseudonymised: bool,
    report: IngestReport,
) -> None:
    con = store.con

    def pseudo(column: str) -> str:
        return column if pseudonymised else store.key.sql_expr(column)

    accepted, users = temp_name("accepted"), temp_name("users")
    # exact duplicates inside the file collapse to their first row (a hash aggregate, no sort)
    con.execute(
        f"""CREATE TEMP TABLE {accepted} AS
        SELECT user_raw, item_id, timestamp, event_type, session_id, category, price, quantity,
               min(src_order) AS src_order, count(*) AS copies
        FROM {typed} WHERE reason IS NULL GROUP BY ALL"""
    )
    con.execute(f"CREATE TEMP TABLE {users} AS SELECT user_raw, {pseudo('user_raw')} AS user_id "
        f"FROM (SELECT DISTINCT user_raw FROM {accepted})")
    store_empty = store.count() == 0
    con.execute("BEGIN TRANSACTION")
    try:
        batch_id = int(con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchall()[0][0])
        next_seq = int(store.get_meta("next_seq") or 0)
        report.batch_id = batch_id
        if batch.rejects_table:
            con.execute(
                f"""INSERT INTO rejects SELECT {batch_id}, {sql_str(batch.source_file)}, src_row, reason,
                    field, raw FROM {batch.rejects_table}"""
            )
        fields_case = " ".join(f"WHEN '{r}' THEN '{f}'" for r, f in REASON_FIELDS.items())
        # the rejected row's values as read, with the user id pseudonymised like everything else
        con.execute(
            f"""INSERT INTO rejects
            SELECT {batch_id}, {sql_str(batch.source_file)}, t.src_row, t.reason,
                   CASE t.reason {fields_case} END,
                   to_json({{user_id: {pseudo('t.user_raw')},
                             item_id: t.item_id, timestamp: t.ts_text, event_type: t.et_text,
                             session_id: t.session_id, category: t.category, price: t.price_text,
                             quantity: t.qty_text}})::VARCHAR
            FROM {typed} t WHERE t.reason IS NOT NULL"""
        )
        new_rows = f"""SELECT u.user_id, a.item_id, a.timestamp, a.event_type, a.session_id, a.category,
                   a.price, a.quantity, {next_seq} + a.src_order AS seq, {batch_id} AS batch_id
            FROM {accepted} a JOIN {users} u USING (user_raw)"""
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

        counts = con.execute(
            f"""SELECT (SELECT count(*) FROM {typed}),
                       (SELECT sum(copies - 1) FROM {accepted}),
                       (SELECT count(*) FROM {accepted}),
                       (SELECT coalesce(max(src_order), -1) + 1 FROM {typed}),
                       (SELECT count(*) FROM {users}),
                       (SELECT count(DISTINCT item_id) FROM {accepted})"""
        ).fetchall()[0]
        typed_rows, dup_file, distinct_rows, span, n_users, n_items = (int(c or 0) for c in counts)
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
        report.duplicates_in_store = distinct_rows - inserted
        report.users, report.items = n_users, n_items
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
        con.execute(f"DROP TABLE IF EXISTS {accepted}; DROP TABLE IF EXISTS {users}")
    if rejects_tmp is not None:
        final = store.rejects_file(batch_id)
        os.replace(rejects_tmp, final)
        report.rejects_file = str(final)
