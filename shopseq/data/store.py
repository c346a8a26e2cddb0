"""The event store: an embedded DuckDB file in the workspace, with Parquet in and out.

Tables: ``events`` (canonical schema), ``items`` (optional attributes), ``rejects`` (every row an
ingest refused, with reason, field, source file and line), ``batches`` (one row per ingest) and
``meta`` (schema version, a change counter that keys the sequence cache, the next ``seq``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shopseq.data.formats.base import sql_str
from shopseq.data.privacy import PseudonymKey
from shopseq.data.schema import EVENT_COLUMNS, ITEM_COLUMNS, event_type_enum_sql
from shopseq.data.workspace import Workspace

SCHEMA_VERSION = "1"
PARQUET_MARKER = "shopseq_export"  # key-value metadata key on our own Parquet exports

_DDL = [
    "CREATE TABLE IF NOT EXISTS events ("
    + ", ".join(f"{name} {dtype}{' NOT NULL' if req else ''}" for name, dtype, req, _ in EVENT_COLUMNS)
    + ")",
    "CREATE TABLE IF NOT EXISTS items ("
    + ", ".join(f"{name} {dtype}" for name, dtype, _ in ITEM_COLUMNS)
    + ", PRIMARY KEY (item_id))",
    """CREATE TABLE IF NOT EXISTS rejects (batch_id INTEGER, source_file VARCHAR, src_row BIGINT,
        reason VARCHAR, field VARCHAR, raw VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS batches (batch_id INTEGER PRIMARY KEY, source_file VARCHAR,
        format VARCHAR, fingerprint VARCHAR, rows_in BIGINT, accepted BIGINT, rejected BIGINT,
        duplicates BIGINT, timestamp_unit VARCHAR, seconds DOUBLE, finished_at TIMESTAMP)""",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
]


class StoreVersionError(RuntimeError):
    pass


class EventStore:
    """Open with ``EventStore.open(workspace)``; use as a context manager to close it."""

    def __init__(self, workspace: Workspace, con: duckdb.DuckDBPyConnection, key: PseudonymKey) -> None:
        self.workspace = workspace
        self.con = con
        self.key = key
        self.last_purged: list[Path] = []  # derived files the last ``forget`` removed or rewrote

    @classmethod
    def open(cls, workspace: Workspace, read_only: bool = False, memory_limit: str = "1500MB") -> EventStore:
        if read_only and not workspace.exists():
            raise FileNotFoundError(
                f"no event store in {workspace.root}: run `shopseq ingest` (or `shopseq demo`) first, "
                "or point --workspace / SHOPSEQ_WORKSPACE at an existing workspace"
            )
        workspace.create()
        con = duckdb.connect(str(workspace.store_path), read_only=read_only)
        con.execute("SET TimeZone = 'UTC'")
        # bounded memory: large ingests spill to the workspace instead of growing without limit
        con.execute(f"SET memory_limit = {sql_str(memory_limit)}")
        con.execute(f"SET temp_directory = {sql_str(workspace.root / 'tmp')}")
        store = cls(workspace, con, PseudonymKey.load_or_create(workspace.key_path))
        if not read_only:
            store._ensure_schema()
        store._check_schema()
        if not read_only:
            store._restore_rejects_files()
        return store

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- schema and meta ------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        for ddl in _DDL:
            self.con.execute(ddl)
        self.con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?), ('version', '0'), ('next_seq', '0') ON CONFLICT DO NOTHING",
            [SCHEMA_VERSION],
        )

    def _check_schema(self) -> None:
        found = self.get_meta("schema_version")
        if found != SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.workspace.store_path} has store schema {found!r}; this shopseq reads {SCHEMA_VERSION!r}"
            )

    def _restore_rejects_files(self) -> None:
        """An ingest killed between its COMMIT and the rename of its rejects CSV leaves the rows in
        the ``rejects`` table but no CSV (and a re-run is skipped as already done): write it now."""
        rows = self.con.execute(
            "SELECT batch_id FROM batches WHERE rejected > 0 AND format <> 'api' ORDER BY batch_id").fetchall()
        for (batch_id,) in rows:
            if not self.rejects_file(int(batch_id)).exists():
                self.write_rejects_file(int(batch_id))
        for stale in self.workspace.rejects_dir.glob(".batch-*.csv.tmp-*"):  # the killed writer's copy
            stale.unlink(missing_ok=True)

    def get_meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def version(self) -> int:
        """Bumped by every change to ``events``: the key of derived caches."""
        return int(self.get_meta("version") or 0)

    def bump_version(self) -> None:
        self.set_meta("version", str(self.version + 1))

    @property
    def cache_key(self) -> str:
        return f"store-v{self.version}"

    # -- reading ----------------------------------------------------------------------------
    def count(self, table: str = "events") -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    def has_ordinal_time(self) -> bool:
        row = self.con.execute(
            "SELECT count(*) FROM batches WHERE timestamp_unit = 'ordinal' AND accepted > 0"
        ).fetchall()
        return bool(row[0][0])

    def rejects(self, batch_id: int | None = None, limit: int | None = None) -> pa.Table:
        where = f"WHERE batch_id = {int(batch_id)}" if batch_id is not None else ""
        lim = f"LIMIT {int(limit)}" if limit else ""
        return self.query_arrow(f"SELECT * FROM rejects {where} ORDER BY batch_id, src_row {lim}")

    def rejects_file(self, batch_id: int) -> Path:
        return self.workspace.rejects_dir / f"batch-{batch_id:05d}.csv"

    def write_rejects_file(self, batch_id: int, final: bool = True) -> Path:
        """A batch's rejects as CSV. ``final=False`` writes under a temporary name for the caller
        to rename into place once its transaction has committed."""
        target = self.rejects_file(batch_id)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        self.con.execute(
            f"""COPY (SELECT source_file, src_row, reason, field, raw FROM rejects
                    WHERE batch_id = {int(batch_id)} ORDER BY src_row) TO {sql_str(tmp)} (HEADER, DELIMITER ',')"""
        )
        if not final:
            return tmp
        os.replace(tmp, target)
        return target

    def batches(self) -> pa.Table:
        return self.query_arrow("SELECT * FROM batches ORDER BY batch_id")

    def query_arrow(self, query: str) -> pa.Table:
        """A query's result as Arrow. A cursor of its own: DuckDB refuses a lazy relation on a
        connection whose last ``execute`` result was not read to the end (e.g. after fetchone)."""
        with self.con.cursor() as cur:
            return cur.sql(query).to_arrow_table()

    # -- Parquet out ------------------------------------------------------------------------
    def export_parquet(self, path: Path) -> int:
        """Write all events (ingest order) to ``path`` atomically; returns the row count.

        The file carries the key fingerprint, so re-importing into a workspace with the same key
        keeps the pseudonyms as they are.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        meta = f"{{{PARQUET_MARKER}: {sql_str(self.key.fingerprint)}, timestamp_unit: 'ms'}}"
        self.con.execute(
            f"""COPY (SELECT user_id, item_id, timestamp, {event_type_enum_sql()} AS event_type,
                       session_id, category, price, quantity FROM events ORDER BY seq)
            TO {sql_str(tmp)} (FORMAT parquet, COMPRESSION zstd, KV_METADATA {meta})"""
        )
        os.replace(tmp, path)
        return self.count()

    # -- privacy ----------------------------------------------------------------------------
    def forget(self, user_id: str, already_pseudonymised: bool = False) -> int:
        """Delete every event and reject of one user; returns the number of events deleted."""
        pseudonym = user_id if already_pseudonymised else self.key.pseudonymise(user_id)
        self.con.execute("BEGIN TRANSACTION")
        try:
            deleted = self.con.execute("DELETE FROM events WHERE user_id = ?", [pseudonym]).fetchall()[0][0]
            # rejected rows keep pseudonyms in their raw JSON: drop those of this user too
            self.con.execute(
                "DELETE FROM rejects WHERE json_valid(raw) AND json_extract_string(raw, '$.user_id') = ?",
                [pseudonym],
            )
            if deleted:
                self.bump_version()
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        # the CSV copies of the rejects must not keep what the table no longer has
        for path in self.workspace.rejects_dir.glob("batch-*.csv"):
            self.write_rejects_file(int(path.stem.removeprefix("batch-")))
        self.last_purged = self.purge_derived(pseudonym)
        return int(deleted)

    def purge_derived(self, pseudonym: str) -> list[Path]:
        """Remove one user from what the workspace derived from the events: the sequence cache
        (every cached version holds all users, and all are stale once the store changed) and any
        Parquet under ``apps/`` with a ``user_id`` column (profiles, targeting lists), rewritten
        atomically without the user's rows. Returns the folders removed and files rewritten."""
        touched: list[Path] = []
        sequences = self.workspace.cache_dir / "sequences"
        if sequences.is_dir():
            for folder in sorted(sequences.iterdir()):
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                    touched.append(folder)
        apps = self.workspace.root / "apps"
        for path in sorted(apps.rglob("*.parquet")) if apps.is_dir() else []:
            if path.name.startswith(".") or "user_id" not in pq.read_schema(path).names:
                continue
            table = pq.read_table(path)  # schema metadata (e.g. the profiles' segments) is kept
            keep = pc.invert(pc.fill_null(pc.equal(table.column("user_id"), pseudonym), False))
            if pc.all(keep).as_py():
                continue
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            pq.write_table(table.filter(keep), tmp)
            os.replace(tmp, path)
            touched.append(path)
        return touched


def upsert_items(store: EventStore, items: pa.Table) -> int:
    """Insert or replace item attributes from an Arrow table with (a subset of) ITEM_COLUMNS."""
    names = [name for name, _, _ in ITEM_COLUMNS]
    missing = [n for n in names if n not in items.column_names]
    if "item_id" in missing:
        raise ValueError("item attribute table needs an item_id column")
    select = ", ".join(
        f"CAST({n} AS {dtype}) AS {n}" if n not in missing else f"NULL::{dtype} AS {n}"
        for n, dtype, _ in ITEM_COLUMNS
    )
    con = store.con
    con.register("_items_in", items)
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM items WHERE item_id IN (SELECT CAST(item_id AS VARCHAR) FROM _items_in)")
        n = con.execute(f"INSERT INTO items SELECT {select} FROM _items_in").fetchall()[0][0]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_items_in")
    return int(n)
