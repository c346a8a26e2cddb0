"""Ingest: cleaning rules, accounting of every row, idempotence, transactions, round trips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from shopseq.data.cleaning import CleaningPolicy
from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
from shopseq.data.ingest import ingest_file
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace

MAPPING = ColumnMapping(user_id="user", item_id="item", timestamp="ts", event_type="type", price="price")
OPTIONS = ReadOptions(mapping=MAPPING, timestamp_unit=TimestampUnit.SECONDS)
# the same without a price column, for the small files below
BASIC = ReadOptions(mapping=MAPPING.model_copy(update={"price": None}), timestamp_unit=TimestampUnit.SECONDS)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    with EventStore.open(Workspace(tmp_path / "ws")) as s:
        yield s


def events(store: EventStore) -> list[tuple]:
    return store.con.execute(
        "SELECT user_id, item_id, timestamp, event_type, price FROM events ORDER BY seq"
    ).fetchall()


# (line content, expected outcome): outcome is "ok", "dup" or a reject reason
MALFORMED = [
    ("user,item,ts,type,price", "header"),
    ("u1,i1,1700000000,view,", "ok"),
    ("u1,i2,1700000060,cart,9.99", "ok"),
    ("u2,i1,1700000100,pv,", "ok"),  # alias pv -> view
    ("  u2 , i3 ,1700000200, BUY ,5", "ok"),  # trimmed, case-insensitive alias
    ("u1,i1,1700000000,view,", "dup"),  # exact duplicate of line 2
    ("u3,i4,not-a-time,view,", "bad_timestamp"),
    ("u3,i4,1700000300,view,cheap", "bad_price"),
    (",i5,1700000400,view,", "missing_user_id"),
    ("u4,,1700000400,view,", "missing_item_id"),
    ("u4,i5,,view,", "missing_timestamp"),
    ("u4,i5,1700000500,,", "ok"),  # missing type -> default view
    ("u4,i6,1700000600,teleport,", "unknown_event_type"),
    ("u5,i6,-5,view,", "impossible_timestamp"),
    ("u5,i6,99999999999,view,", "impossible_timestamp"),  # year 5138 in seconds
    ("%%% garbage %%%", "missing_columns"),
    ("u6,i7,1700000700,view,1,extra,fields", "too_many_columns"),
    ("", "blank"),
    ("u6,i8,2023-11-14T22:13:20Z,fav,", "bad_timestamp"),  # unit is seconds here: text is not a number
    ("u7,i9,1700000900,purchase,-3", "bad_price"),
    ("u7,i9,1700000900,purchase,3", "ok"),
]


def write_malformed(path: Path) -> None:
    body = b"\n".join(line.encode() for line, _ in MALFORMED) + b"\n"
    body += b"u8,caf\xe9,1700001000,view,\n"  # latin-1 byte in a utf-8 file
    body += b"u8,i10,1700001100,view,\n"
    path.write_bytes(body)


def test_malformed_file_accounts_for_every_row(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "dirty.csv"
    write_malformed(src)
    report = ingest_file(store, src, "csv", OPTIONS)

    expected = [o for _, o in MALFORMED] + ["invalid_encoding", "ok"]
    n_ok = expected.count("ok")
    n_dup = expected.count("dup")
    reasons = [o for o in expected if o not in ("ok", "dup", "header", "blank")]
    assert report.accepted == n_ok
    assert report.duplicates == n_dup
    assert report.rejected_total == len(reasons)
    assert report.rows_in == n_ok + n_dup + len(reasons)
    assert report.balanced()

    # every rejected row is there, on its line, with the right reason
    got = {(r["src_row"], r["reason"]) for r in store.rejects().to_pylist()}
    want = {(i + 1, o) for i, o in enumerate(expected) if o in reasons}
    assert got == want
    by_line = {r["src_row"]: r for r in store.rejects().to_pylist()}
    assert by_line[7]["field"] == "timestamp"
    assert by_line[8]["field"] == "price"
    assert '"cheap"' in by_line[8]["raw"]
    # an unparsable line is kept with its user id pseudonymised like every stored id
    assert by_line[17]["raw"].startswith(f"{store.key.pseudonymise('u6')},i7,")

    # no valid row is lost: each "ok" line is stored, with its coerced values
    stored = events(store)
    assert len(stored) == n_ok
    items = [row[1] for row in stored]
    assert items == ["i1", "i2", "i1", "i3", "i5", "i9", "i10"]  # ingest order preserved by seq
    assert stored[3][2] == 1_700_000_200_000 and stored[3][3] == 3  # ms, purchase
    assert stored[4][3] == 0  # missing type -> view

    # the rejects file holds the same rows
    rejects_csv = Path(report.rejects_file)
    assert rejects_csv.exists()
    assert len(rejects_csv.read_text().strip().splitlines()) == len(reasons) + 1


def test_reingest_adds_nothing_and_overlaps_are_duplicates(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text("user,item,ts,type\nu1,i1,1700000000,view\nu1,i2,1700000001,view\n")
    first = ingest_file(store, src, "csv", BASIC)
    again = ingest_file(store, src, "csv", BASIC)
    assert first.accepted == 2 and again.skipped and store.count() == 2
    overlap = tmp_path / "b.csv"
    overlap.write_text("user,item,ts,type\nu1,i2,1700000001,view\nu2,i3,1700000002,view\n")
    report = ingest_file(store, overlap, "csv", BASIC)
    assert (report.accepted, report.duplicates_in_store) == (1, 1)
    assert store.count() == 3


def test_policy_options(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    src.write_text("user,item,ts,type,price\nu1,i1,1700000000,,x\nu1,i2,1700000001,click,2\n")
    policy = CleaningPolicy(default_event_type=None, invalid_optional="null").with_aliases(["click=fav"])
    report = ingest_file(store, src, "csv", OPTIONS, policy)
    assert report.rejected == {"missing_event_type": 1}
    assert events(store) == [(store.key.pseudonymise("u1"), "i2", 1_700_000_001_000, 2, 2.0)]
    with pytest.raises(ValueError, match="must map to"):
        CleaningPolicy().with_aliases(["click=teleport"])


def test_kcore_filter(store: EventStore, tmp_path: Path) -> None:
    # u1 and u2 each see i1,i2; u3 sees only i3 once -> dropped by a 2-core
    rows = ["u1,i1,1700000000", "u1,i2,1700000001", "u2,i1,1700000002", "u2,i2,1700000003", "u3,i3,1700000004"]
    src = tmp_path / "k.csv"
    src.write_text("user,item,ts,type\n" + "\n".join(f"{r},view" for r in rows) + "\n")
    report = ingest_file(store, src, "csv", BASIC, CleaningPolicy(kcore=2))
    assert report.accepted == 4 and report.rejected == {"kcore_filter": 1}


def test_timestamp_units(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_text(
        "user,item,ts\nu1,i1,1700000000\nu1,i2,1700000000123\nu1,i3,1700000000123456\n"
        "u1,i4,2023-11-14 22:13:20\nu1,i5,2023-11-14T23:13:20+01:00\n"
    )
    ingest_file(store, src, "csv", ReadOptions(mapping=MAPPING.model_copy(update={"price": None, "event_type": None})))
    got = dict(store.con.execute("SELECT item_id, timestamp FROM events").fetchall())
    assert got == {"i1": 1_700_000_000_000, "i2": 1_700_000_000_123, "i3": 1_700_000_000_123,
                   "i4": 1_700_000_000_000, "i5": 1_700_000_000_000}


@pytest.mark.parametrize("unit", [TimestampUnit.SECONDS, TimestampUnit.MILLISECONDS, TimestampUnit.MICROSECONDS,
                                  TimestampUnit.AUTO])
def test_extreme_integer_timestamps_are_rejected_rows_not_a_failed_file(store: EventStore, tmp_path: Path,
                                                                       unit: TimestampUnit) -> None:
    """The smallest and largest BIGINT (a fuzz find: abs() of the smallest overflowed in DuckDB)."""
    src = tmp_path / "x.jsonl"
    src.write_text("".join(f'{{"user": "u1", "item": "i{i}", "ts": {ts}}}\n'
                           for i, ts in enumerate([-2**63, 2**63 - 1, 1_700_000_000])))
    mapping = MAPPING.model_copy(update={"price": None, "event_type": None})
    report = ingest_file(store, src, "jsonl", ReadOptions(mapping=mapping, timestamp_unit=unit))
    assert report.accepted == 1 and report.rejected_total == 2, report
    assert set(report.rejected) <= {"impossible_timestamp", "bad_timestamp"}


def test_jsonl_malformed_lines_are_rejected_with_line_numbers(store: EventStore, tmp_path: Path) -> None:
    src = tmp_path / "e.jsonl"
    src.write_text(
        '{"user": "u1", "item": "i1", "ts": 1700000000, "type": "view"}\n'
        "{not json\n"
        "\n"
        '{"user": "u1", "item": "i2", "ts": 1700000001, "type": "cart"}\n'
        "[1, 2]\n"
    )
    report = ingest_file(store, src, "jsonl", BASIC)
    assert report.accepted == 2 and report.rejected == {"malformed_json": 2}
    assert {r["src_row"] for r in store.rejects().to_pylist()} == {2, 5}


def test_parquet_round_trip_gives_the_same_events(tmp_path: Path) -> None:
    src = tmp_path / "e.parquet"
    pq.write_table(
        pa.table({
            "user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"],
            "timestamp": [1_700_000_000_000, 1_700_000_000_000, 1_700_000_100_000, 1_700_000_200_000],
            "event_type": ["view", "purchase", "cart", "fav"], "session_id": ["s1", "s1", None, "s3"],
            "category": ["c1", None, "c1", "c2"], "price": [1.5, 2.0, None, 3.0], "quantity": [1, 2, None, 1],
        }),
        src,
    )
    full = ReadOptions(
        mapping=ColumnMapping(session_id="session_id", category="category", price="price", quantity="quantity"),
        timestamp_unit=TimestampUnit.MILLISECONDS,
    )
    cols = "user_id, item_id, timestamp, event_type, session_id, category, price, quantity"
    ws1 = Workspace(tmp_path / "ws1")
    with EventStore.open(ws1) as s1:
        ingest_file(s1, src, "parquet", full)
        before = s1.con.execute(f"SELECT {cols} FROM events ORDER BY seq").fetchall()
        s1.export_parquet(tmp_path / "export.parquet")
    # a second workspace sharing the key (e.g. a restore) gets exactly the same events back
    ws2 = Workspace(tmp_path / "ws2").create()
    ws2.key_path.write_bytes(ws1.key_path.read_bytes())
    with EventStore.open(ws2) as s2:
        report = ingest_file(s2, tmp_path / "export.parquet", "parquet")
        after = s2.con.execute(f"SELECT {cols} FROM events ORDER BY seq").fetchall()
    assert report.accepted == 4
    assert after == before
    # another key cannot match the pseudonyms: a clear error instead of silent double hashing
    with EventStore.open(Workspace(tmp_path / "ws3")) as s3, pytest.raises(ValueError, match="another workspace"):
        ingest_file(s3, tmp_path / "export.parquet", "parquet")


def test_failure_inside_the_transaction_leaves_the_store_as_it_was(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.csv"
    good.write_text("user,item,ts,type\nu1,i1,1700000000,view\n")
    ingest_file(store, good, "csv", BASIC)
    snapshot = [store.count(t) for t in ("events", "rejects", "batches")], store.version

    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,ts,type\nu2,i2,1700000001,view\n,i3,1700000002,view\n")

    def boom() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "bump_version", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_file(store, bad, "csv", BASIC)
    monkeypatch.undo()
    assert ([store.count(t) for t in ("events", "rejects", "batches")], store.version) == snapshot
    # the failed file was not marked as ingested: running it again completes it
    assert ingest_file(store, bad, "csv", BASIC).accepted == 1


_INGEST_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shopseq.data.formats.base import ReadOptions, TimestampUnit
    from shopseq.data.ingest import ingest_file
    from shopseq.data.store import EventStore
    from shopseq.data.workspace import Workspace
    with EventStore.open(Workspace(Path(sys.argv[1]))) as store:
        ingest_file(store, Path(sys.argv[2]), "parquet", ReadOptions(timestamp_unit=TimestampUnit.MILLISECONDS))
    """
)


def test_sigkill_during_ingest_leaves_nothing_half_written(tmp_path: Path) -> None:
    n = 3_000_000  # about 2.5 s of ingest here: the kill lands mid-way
    src = tmp_path / "big.parquet"
    idx = pa.array(range(n))
    pq.write_table(pa.table({
        "user_id": pc.cast(pc.divide(idx, 20), pa.string()),
        "item_id": pc.cast(pc.bit_wise_and(idx, 4095), pa.string()),
        "timestamp": pc.add(pc.multiply(idx, 1000), 1_700_000_000_000),
        "event_type": pa.array(["view"] * n),
    }), src)
    ws = tmp_path / "ws"
    script = tmp_path / "ingest.py"
    script.write_text(_INGEST_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(ws), str(src)])
    # kill it while it works: after the workspace exists, before it can finish
    deadline = time.time() + 60
    while not (ws / "store.duckdb").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.8)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the ingest finished before it could be killed"
    with EventStore.open(Workspace(ws)) as store:
        assert store.count() in (0, n)  # all or nothing, never a part
        assert store.count("batches") in (0, 1)
        ingest_file(store, src, "parquet", ReadOptions(timestamp_unit=TimestampUnit.MILLISECONDS))
        assert store.count() == n
