"""Pseudonymisation: SQL HMAC equals the reference, the key stays private, forget deletes."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import duckdb

from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
from shopseq.data.ingest import ingest_file
from shopseq.data.privacy import PseudonymKey
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace

IDS = ["u1", "customer-00042", "ünïcødé 用户", "a" * 200, "x'); DROP TABLE events; --"]


def test_sql_hmac_matches_python_hmac(tmp_path: Path) -> None:
    key = PseudonymKey.load_or_create(tmp_path / "k")
    con = duckdb.connect()
    con.execute("CREATE TABLE ids (u VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?)", [[i] for i in IDS])
    got = dict(con.execute(f"SELECT u, {key.sql_expr('u')} FROM ids").fetchall())
    raw = bytes.fromhex((tmp_path / "k").read_text())
    for uid in IDS:
        assert got[uid] == hmac.new(raw, uid.encode(), hashlib.sha256).hexdigest()[:16] == key.pseudonymise(uid)


def test_key_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    first = PseudonymKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PseudonymKey.load_or_create(path)
    assert first.pseudonymise("u1") == again.pseudonymise("u1")
    other = PseudonymKey.load_or_create(tmp_path / "other.key")
    assert other.pseudonymise("u1") != first.pseudonymise("u1")
    assert first.fingerprint != other.fingerprint


def _ingest_people(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "people.csv"
    src.write_text(
        "user,item,ts\n"
        "alice@example.com,i1,1700000000\nalice@example.com,i2,1700000100\n"
        "bob@example.com,i1,1700000200\nbob@example.com,,1700000300\n"  # bob's second row is rejected
    )
    mapping = ColumnMapping(user_id="user", item_id="item", timestamp="ts", event_type=None)
    ingest_file(store, src, "csv", ReadOptions(mapping=mapping, timestamp_unit=TimestampUnit.SECONDS))


def test_raw_user_ids_never_reach_the_store_or_exports(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with EventStore.open(ws) as store:
        _ingest_people(store, tmp_path)
        store.export_parquet(ws.exports_dir / "all.parquet")
        assert store.count() == 3
    files = [ws.store_path, ws.exports_dir / "all.parquet", *ws.rejects_dir.glob("*.csv")]
    assert len(files) == 3
    for f in files:
        assert b"example.com" not in f.read_bytes(), f


def test_forget_deletes_a_users_events_and_rejects(tmp_path: Path) -> None:
    with EventStore.open(Workspace(tmp_path / "ws")) as store:
        _ingest_people(store, tmp_path)
        version = store.version
        bob = store.key.pseudonymise("bob@example.com")
        assert store.count("rejects") == 1
        assert bob in (store.workspace.rejects_dir / "batch-00001.csv").read_text()
        assert store.forget("bob@example.com") == 1
        assert bob not in (store.workspace.rejects_dir / "batch-00001.csv").read_text()
        assert store.con.execute("SELECT count(*) FROM events WHERE user_id = ?", [bob]).fetchone()[0] == 0
        assert store.count("rejects") == 0
        assert store.count() == 2  # alice untouched
        assert store.version == version + 1
        assert store.forget("nobody") == 0
