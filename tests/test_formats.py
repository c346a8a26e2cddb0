"""Format readers: exact counts on the public files (when present) and synthetic files for every format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest

from shopseq.data.formats import FORMATS, ColumnMapping, RawBatch, ReadOptions, TimestampUnit, read_source
from shopseq.data.schema import SOURCE_FIELDS


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    yield c
    c.close()


def counts(con: duckdb.DuckDBPyConnection, batch: RawBatch) -> tuple[int, int, int]:
    """(rows, distinct users, distinct items) straight from the raw table."""
    return con.execute(
        f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) FROM {batch.table}"
    ).fetchone()


def rows(con: duckdb.DuckDBPyConnection, table: str, where: str = "true") -> list[tuple]:
    return con.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY ALL").fetchall()


def rejects(con: duckdb.DuckDBPyConnection, batch: RawBatch) -> list[tuple]:
    return con.execute(f"SELECT src_row, reason FROM {batch.rejects_table} ORDER BY src_row").fetchall()


def line_of(path: Path, n: int) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for i, line in enumerate(f, 1):
            if i == n:
                return line.rstrip("\n")
    raise AssertionError(f"{path} has fewer than {n} lines")


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def assert_canonical(con: duckdb.DuckDBPyConnection, batch: RawBatch) -> None:
    cols = con.execute(f"DESCRIBE {batch.table}").fetchall()
    assert [c[0] for c in cols] == ["src_row", *SOURCE_FIELDS]
    assert all(c[1] == "VARCHAR" for c in cols[1:]), cols


# --------------------------------------------------------------------------------------------
# registry


def test_registry_covers_all_formats() -> None:
    assert set(FORMATS) == {
        "csv",
        "tsv",
        "jsonl",
        "parquet",
        "s3rec",
        "sasrec",
        "taobao",
        "yoochoose",
        "diginetica",
        "otto",
        "movielens",
        "recbole",
    }
    for name, info in FORMATS.items():
        assert info.name == name and callable(info.reader)
        assert info.description and "\n" not in info.description
        assert info.generic == (name in {"csv", "tsv", "jsonl", "parquet"})


def test_unknown_format_lists_valid_names(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", "a\n1\n")
    with pytest.raises(ValueError, match=r"valid formats: .*s3rec.*recbole"):
        read_source(con, f, "nope")


def test_missing_file_is_named(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    missing = tmp_path / "absent.csv"
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        read_source(con, missing, "csv")


def test_generic_csv_uses_caller_options(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", "u,i,t,e\n1,10,5,view\n2,11,6,buy\n")
    opts = ReadOptions(
        mapping=ColumnMapping(user_id="u", item_id="i", timestamp="t", event_type="e"),
        timestamp_unit=TimestampUnit.SECONDS,
    )
    b = read_source(con, f, "csv", opts)
    assert b.timestamp_unit == TimestampUnit.SECONDS
    assert rows(con, b.table) == [
        (2, "1", "10", "5", "view", None, None, None, None),
        (3, "2", "11", "6", "buy", None, None, None, None),
    ]


# --------------------------------------------------------------------------------------------
# public files (skipped when shared/data is absent)


@pytest.mark.parametrize(
    ("name", "expected", "unit"),
    [
        ("Beauty", (198_502, 22_363, 12_101), TimestampUnit.SECONDS),
        ("Sports_and_Outdoors", (296_337, 35_598, 18_357), TimestampUnit.SECONDS),
        ("Toys_and_Games", (167_597, 19_412, 11_924), TimestampUnit.ORDINAL),
    ],
)
def test_s3rec_counts(
    con: duckdb.DuckDBPyConnection, shared_data: Path, name: str, expected: tuple, unit: TimestampUnit
) -> None:
    b = read_source(con, shared_data / "amazon-s3rec" / f"{name}.txt.gz", "s3rec")
    assert_canonical(con, b)
    assert counts(con, b) == expected
    assert b.timestamp_unit == unit
    assert con.execute(f"SELECT count(*) FROM {b.table} WHERE timestamp IS NULL").fetchone()[0] == 0
    assert con.execute(f"SELECT DISTINCT event_type FROM {b.table}").fetchall() == [("review",)]
    assert rejects(con, b) == []
    assert b.items_table is not None  # all three have an item2attributes file


def test_s3rec_beauty_lines_and_time_alignment(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    folder = shared_data / "amazon-s3rec"
    b = read_source(con, folder / "Beauty.txt.gz", "s3rec")
    for n in (1, 3, 22_363):
        user, *items = line_of(folder / "Beauty.txt.gz", n).split()
        got = con.execute(
            f"SELECT user_id, list(item_id) FROM {b.table} WHERE src_row = {n} GROUP BY 1"
        ).fetchone()
        assert got[0] == user and sorted(got[1]) == sorted(items)
    # item k of line u gets t_k of line u of the time file
    user, *times = line_of(folder / "Beauty_time.txt.gz", 1).split()
    _, *items = line_of(folder / "Beauty.txt.gz", 1).split()
    got = dict(con.execute(f"SELECT item_id, timestamp FROM {b.table} WHERE user_id = '{user}'").fetchall())
    assert got == dict(zip(items, times, strict=True))
    assert got[items[0]] == times[0] == "1318896000"
    # item attributes: ids as text, 637 distinct, Beauty has names noted
    n_items, n_attrs = con.execute(
        f"SELECT count(DISTINCT item_id), count(DISTINCT a) FROM (SELECT item_id, unnest(attributes) a "
        f"FROM {b.items_table})"
    ).fetchone()
    assert (n_items, n_attrs) == (12_101, 637)
    assert con.execute(f"SELECT attributes FROM {b.items_table} WHERE item_id = '4'").fetchone()[0] == [
        "1",
        "2",
        "3",
    ]
    assert any("Beauty_attribute_names.json" in n for n in b.notes)


def test_s3rec_toys_ordinal(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    folder = shared_data / "amazon-s3rec"
    b = read_source(con, folder / "Toys_and_Games.txt.gz", "s3rec")
    _, *items = line_of(folder / "Toys_and_Games.txt.gz", 2).split()
    got = con.execute(f"SELECT item_id, timestamp FROM {b.table} WHERE src_row = 2").fetchall()
    assert sorted(got, key=lambda r: int(r[1])) == [(it, str(k)) for k, it in enumerate(items, 1)]


def test_taobao(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    path = shared_data / "taobao-userbehavior-sample" / "UserBehavior_head.csv.gz"
    b = read_source(con, path, "taobao")
    assert_canonical(con, b)
    assert counts(con, b) == (84_287, 814, 55_233)
    assert b.timestamp_unit == TimestampUnit.SECONDS
    by_type = dict(con.execute(f"SELECT event_type, count(*) FROM {b.table} GROUP BY 1").fetchall())
    assert by_type == {"pv": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}
    assert con.execute(f"SELECT count(DISTINCT category) FROM {b.table}").fetchone()[0] == 2_911
    for n in (1, 50_000, 84_287):
        u, i, c, e, t = line_of(path, n).split(",")
        assert rows(con, b.table, f"src_row = {n}") == [(n, u, i, t, e, None, c, None, None)]


def test_otto(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    path = shared_data / "otto-sample" / "train_head20.jsonl"
    b = read_source(con, path, "otto")
    assert_canonical(con, b)
    assert counts(con, b) == (862, 20, 510)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    by_type = dict(con.execute(f"SELECT event_type, count(*) FROM {b.table} GROUP BY 1").fetchall())
    assert by_type == {"clicks": 800, "carts": 52, "orders": 10}
    last = json.loads(line_of(path, 20))
    got = con.execute(
        f"SELECT user_id, session_id, item_id, timestamp, event_type FROM {b.table} WHERE src_row = 20"
    ).fetchall()
    sid = str(last["session"])
    assert sorted(got) == sorted((sid, sid, str(e["aid"]), str(e["ts"]), e["type"]) for e in last["events"])
    assert sid == "12899778"


def test_yoochoose(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    folder = shared_data / "yoochoose-clicks-100k"
    b = read_source(con, folder / "yoochoose-clicks-100k_train_full.txt.gz", "yoochoose")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    n, sessions, items = counts(con, b)
    assert (n, sessions, items) == (70_278, 17_794, 2_933)
    assert con.execute(f"SELECT count(DISTINCT session_id) FROM {b.table}").fetchone()[0] == 17_794
    # line 2 is the first record (line 1 is the header); float seconds become exact ms
    assert rows(con, b.table, "src_row = 2") == [
        (2, "3", "214716935", "1396437466940", "view", "3", None, None, None)
    ]
    t = read_source(con, folder / "yoochoose-clicks-100k_test.txt", "yoochoose")
    assert counts(con, t)[:2] == (13_568, 3_416)


def test_diginetica(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    b = read_source(con, shared_data / "diginetica-sample" / "sample_train-item-views.csv", "diginetica")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    n, _, items = counts(con, b)
    assert (n, items) == (12_391, 7_139)
    sessions, known = con.execute(
        f"SELECT count(DISTINCT session_id), count(DISTINCT user_id) FILTER (WHERE NOT user_id LIKE 's:%') "
        f"FROM {b.table}"
    ).fetchone()
    assert (sessions, known) == (2_986, 1_270)
    # line 2: '1;NA;81766;526309;2016-05-09' -> 2016-05-09 UTC midnight + 526,309 ms
    assert rows(con, b.table, "src_row = 2") == [
        (2, "s:1", "81766", "1462752526309", "view", "1", None, None, None)
    ]
    assert con.execute(f"SELECT count(*) FROM {b.table} WHERE timestamp IS NULL").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("ml-100k/u.data.gz", (100_000, 943, 1_682)),
        ("ml-latest-small/ratings.csv.gz", (100_836, 610, 9_724)),
    ],
)
def test_movielens(con: duckdb.DuckDBPyConnection, shared_data: Path, rel: str, expected: tuple) -> None:
    path = shared_data / rel
    b = read_source(con, path, "movielens")
    assert_canonical(con, b)
    assert counts(con, b) == expected
    assert b.timestamp_unit == TimestampUnit.SECONDS
    assert con.execute(f"SELECT DISTINCT event_type FROM {b.table}").fetchall() == [("review",)]
    n = 1 if rel.endswith("u.data.gz") else 2  # ratings.csv has a header
    u, i, _, t = line_of(path, n).replace("\t", ",").split(",")
    assert rows(con, b.table, f"src_row = {n}") == [(n, u, i, t, "review", None, None, None, None)]


def test_sasrec_ml1m(con: duckdb.DuckDBPyConnection, shared_data: Path) -> None:
    b = read_source(con, shared_data / "ml-1m" / "ml-1m.txt.gz", "sasrec")
    assert_canonical(con, b)
    assert counts(con, b) == (999_611, 6_040, 3_416)
    assert b.timestamp_unit == TimestampUnit.ORDINAL
    # ordinal positions are 1..n per user, increasing with the line
    bad = con.execute(
        f"""SELECT count(*) FROM (SELECT timestamp::BIGINT AS t,
                row_number() OVER (PARTITION BY user_id ORDER BY src_row) AS k FROM {b.table}) WHERE t <> k"""
    ).fetchone()[0]
    assert bad == 0


# --------------------------------------------------------------------------------------------
# synthetic files (always run)


def test_s3rec_synthetic_with_time_and_attributes(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    seq = write(tmp_path / "Mini.txt.gz", "1 10 11 12\n2 13\n\n3\n4  10 14 \n")
    write(tmp_path / "Mini_time.txt.gz", "1 100 200 300\n2 400\n\n3\n4 500 600\n")
    (tmp_path / "Mini_item2attributes.json").write_text(json.dumps({"10": [1, 2], "11": [3]}))
    (tmp_path / "Mini_attribute_names.json").write_text(json.dumps({"1": "a", "2": "b", "3": "c"}))
    b = read_source(con, seq, "s3rec")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.SECONDS
    assert rows(con, b.table) == [
        (1, "1", "10", "100", "review", None, None, None, None),
        (1, "1", "11", "200", "review", None, None, None, None),
        (1, "1", "12", "300", "review", None, None, None, None),
        (2, "2", "13", "400", "review", None, None, None, None),
        (5, "4", "10", "500", "review", None, None, None, None),
        (5, "4", "14", "600", "review", None, None, None, None),
    ]
    assert rejects(con, b) == [(4, "missing_columns")]  # a user with no items
    assert rows(con, b.items_table) == [("10", None, None, None, ["1", "2"]), ("11", None, None, None, ["3"])]
    assert any("3 attribute ids" in n for n in b.notes)


def test_s3rec_synthetic_ordinal_and_misaligned_time(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    seq = write(tmp_path / "a" / "Toy.txt", "7 1 2 3\n8 4\n")
    b = read_source(con, seq, "s3rec")
    assert b.timestamp_unit == TimestampUnit.ORDINAL and b.items_table is None
    assert con.execute(f"SELECT user_id, item_id, timestamp FROM {b.table}").fetchall() == [
        ("7", "1", "1"),
        ("7", "2", "2"),
        ("7", "3", "3"),
        ("8", "4", "1"),
    ]
    # a time line one value short leaves that event without a timestamp (cleaning rejects it)
    write(tmp_path / "a" / "Toy_time.txt", "7 100 200\n8 400\n")
    b = read_source(con, seq, "s3rec")
    assert con.execute(f"SELECT item_id, timestamp FROM {b.table}").fetchall() == [
        ("1", "100"),
        ("2", "200"),
        ("3", None),
        ("4", "400"),
    ]
    assert any("1 line(s)" in n for n in b.notes)


def test_s3rec_line_numbers_survive_blank_and_undecodable_lines(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    seq = tmp_path / "Odd.txt"
    seq.write_bytes(b"\n\n1 2 3\n2 \xff\xfe 4\n\n3 5\n4 6")  # leading blanks, bad UTF-8, no final newline
    b = read_source(con, seq, "s3rec")
    assert con.execute(f"SELECT src_row, user_id, item_id FROM {b.table}").fetchall() == [
        (3, "1", "2"),
        (3, "1", "3"),
        (6, "3", "5"),
        (7, "4", "6"),
    ]
    assert rejects(con, b) == [(4, "invalid_encoding")]


def test_sasrec_synthetic(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    f = write(tmp_path / "s.txt", "1 5\n1 6\n2 5\n\n1 7\n2 8 9\n")
    b = read_source(con, f, "sasrec")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.ORDINAL
    assert con.execute(
        f"SELECT src_row, user_id, item_id, timestamp, event_type FROM {b.table}"
    ).fetchall() == [
        (1, "1", "5", "1", None),
        (2, "1", "6", "2", None),
        (3, "2", "5", "1", None),
        (5, "1", "7", "3", None),
    ]
    assert rejects(con, b) == [(6, "too_many_columns")]


def test_taobao_synthetic(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    f = write(
        tmp_path / "ub.csv.gz", "1,100,7,pv,1511544070\n1,101,7,buy,1511544080\n1,2,3,pv,4,5\n2,9,8,fav,x\n"
    )
    b = read_source(con, f, "taobao")
    assert b.timestamp_unit == TimestampUnit.SECONDS
    assert rows(con, b.table) == [
        (1, "1", "100", "1511544070", "pv", None, "7", None, None),
        (2, "1", "101", "1511544080", "buy", None, "7", None, None),
        (4, "2", "9", "x", "fav", None, "8", None, None),  # bad values pass through for cleaning
    ]
    assert rejects(con, b) == [(3, "too_many_columns")]


def test_otto_synthetic(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "session": 5,
                "events": [
                    {"aid": 1, "ts": 1000, "type": "clicks"},
                    {"aid": 2, "ts": 2000, "type": "orders"},
                ],
            }
        ),
        "{not json",
        json.dumps({"session": 6, "events": "oops"}),
        "",
        json.dumps({"session": 7, "events": [{"aid": 3, "ts": 3000, "type": "carts"}]}),
    ]
    f = write(tmp_path / "o.jsonl", "\n".join(lines) + "\n")
    b = read_source(con, f, "otto")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    assert rows(con, b.table) == [
        (1, "5", "1", "1000", "clicks", "5", None, None, None),
        (1, "5", "2", "2000", "orders", "5", None, None, None),
        (5, "7", "3", "3000", "carts", "7", None, None, None),
    ]
    assert rejects(con, b) == [(2, "malformed_json"), (3, "missing_columns")]


def test_yoochoose_synthetic_layouts(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    prepared = write(tmp_path / "p.txt", "SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n3\t2\tbad\n")
    b = read_source(con, prepared, "yoochoose")
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    assert rows(con, b.table) == [
        (2, "3", "214716935", "1396437466940", "view", "3", None, None, None),
        (3, "3", "2", "bad", "view", "3", None, None, None),
    ]
    clicks = write(
        tmp_path / "yoochoose-clicks.dat",
        "1,2014-04-07T10:51:09.277Z,214536502,0\n2,2014-04-07T10:54:09.868Z,214662742,S\n",
    )
    b = read_source(con, clicks, "yoochoose")
    assert b.timestamp_unit == TimestampUnit.ISO
    assert rows(con, b.table) == [
        (1, "1", "214536502", "2014-04-07T10:51:09.277Z", "view", "1", "0", None, None),
        (2, "2", "214662742", "2014-04-07T10:54:09.868Z", "view", "2", "S", None, None),
    ]
    buys = write(tmp_path / "yoochoose-buys.dat", "420374,2014-04-06T18:44:58.314Z,214537888,12462,1\n")
    b = read_source(con, buys, "yoochoose")
    assert rows(con, b.table) == [
        (1, "420374", "214537888", "2014-04-06T18:44:58.314Z", "purchase", "420374", None, "12462", "1"),
    ]


def test_diginetica_synthetic(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    f = write(
        tmp_path / "views.csv",
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;10;500;2016-05-09\n"
        "2;42;11;1000;2016-05-09\n"
        "3;;12;0;not-a-date\n"
        "4;NA;13;86000000;2016-05-31\n"  # a session crossing midnight keeps its first date
        "4;NA;14;86500000;2016-06-01\n"
        "5;NA;15;x;2016-05-09\n",
    )
    b = read_source(con, f, "diginetica")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    may9, may31 = 1_462_752_000_000, 1_464_652_800_000
    assert con.execute(
        f"SELECT src_row, user_id, item_id, timestamp, event_type, session_id FROM {b.table}"
    ).fetchall() == [
        (2, "s:1", "10", str(may9 + 500), "view", "1"),
        (3, "42", "11", str(may9 + 1000), "view", "2"),
        (4, "s:3", "12", "not-a-date", "view", "3"),  # raw date kept: cleaning reports a bad timestamp
        (5, "s:4", "13", str(may31 + 86_000_000), "view", "4"),
        (6, "s:4", "14", str(may31 + 86_500_000), "view", "4"),
        (7, "s:5", "15", "x", "view", "5"),
    ]
    purchases = write(
        tmp_path / "purchases.csv",
        "sessionId;userId;timeframe;eventdate;ordernumber;itemId\n150;18278;490;2016-05-09;8;9\n",
    )
    b = read_source(con, purchases, "diginetica")
    assert rows(con, b.table) == [(2, "18278", "9", str(may9 + 490), "purchase", "150", None, None, None)]


def test_movielens_synthetic_layouts(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    expect = [
        (1, "196", "242", "881250949", "review", None, None, None, None),
        (2, "186", "302", "891717742", "review", None, None, None, None),
    ]
    udata = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    dat = write(tmp_path / "ratings.dat", "196::242::3::881250949\n186::302::3::891717742\n")
    csv = write(
        tmp_path / "ratings.csv.gz",
        "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,3.5,891717742\n",
    )
    for f, shift in ((udata, 0), (dat, 0), (csv, 1)):
        b = read_source(con, f, "movielens")
        assert b.timestamp_unit == TimestampUnit.SECONDS
        assert rows(con, b.table) == [(r[0] + shift, *r[1:]) for r in expect], f.name
    with pytest.raises(ValueError, match="not a MovieLens"):
        read_source(con, write(tmp_path / "x.csv", "a,b\n1,2\n"), "movielens")


def test_recbole_synthetic(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    inter = write(
        tmp_path / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3\t891717742.5\n",
    )
    b = read_source(con, inter, "recbole")
    assert_canonical(con, b)
    assert b.timestamp_unit == TimestampUnit.MILLISECONDS
    assert rows(con, b.table) == [
        (2, "196", "242", "881250949000", "review", None, None, None, None),
        (3, "186", "302", "891717742500", "review", None, None, None, None),
    ]
    sessions = write(tmp_path / "s.inter", "session_id:token\titem_id:token\n9\t1\n9\t2\n8\t1\n")
    b = read_source(con, sessions, "recbole")
    assert b.timestamp_unit == TimestampUnit.ORDINAL
    assert rows(con, b.table) == [
        (2, "9", "1", "1", None, "9", None, None, None),
        (3, "9", "2", "2", None, "9", None, None, None),
        (4, "8", "1", "1", None, "8", None, None, None),
    ]
    with pytest.raises(ValueError, match="item_id"):
        read_source(
            con,
            write(tmp_path / "bad.inter", "session_id:token\titem_id_list:token_seq\n1\t2 3\n"),
            "recbole",
        )
