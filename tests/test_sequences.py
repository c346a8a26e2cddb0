from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from shopseq.data.schema import EVENT_COLUMNS
from shopseq.data.sequences import SequenceCache, Sequences, build_item_vocab, build_sequences
from shopseq.data.vocab import Vocabulary

# (user_id, item_id, timestamp, event_type, seq)
Row = tuple[str, str, int, int, int]


def make_events(rows: list[Row], con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory store with the canonical ``events`` table holding ``rows``."""
    con = con or duckdb.connect()
    cols = ", ".join(f"{name} {typ}" for name, typ, _, _ in EVENT_COLUMNS)
    con.execute(f"CREATE TABLE events ({cols})")
    if rows:
        u, i, ts, et, seq = zip(*rows, strict=True)
        con.register("_rows", pa.table({"u": u, "i": i, "ts": ts, "et": et, "seq": seq}))
        con.execute(
            "INSERT INTO events (user_id, item_id, timestamp, event_type, seq, batch_id) "
            "SELECT u, i, ts, et, seq, 1 FROM _rows"
        )
        con.unregister("_rows")
    return con


ROWS: list[Row] = [
    # user b: ts tie at 200 -> seq decides (seq 7 before seq 9, whatever the insert order)
    ("b", "x", 200, 0, 9),
    ("b", "y", 200, 1, 7),
    ("b", "x", 100, 0, 8),
    ("a", "z", 50, 0, 1),
    ("a", "x", 60, 3, 2),
    ("c", "y", 10, 2, 3),
    ("a", "y", 70, 0, 4),
]


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return make_events(ROWS)


# -- vocabularies -----------------------------------------------------------------------------
def test_item_vocab_order_padding_and_unknown() -> None:
    v = Vocabulary.for_items(["b", "a", "c", "a", "b", "d", "a"])
    # a:3, b:2, then c and d with 1 each, tie broken by id
    assert v.ids.to_pylist() == ["a", "b", "c", "d"]
    assert len(v) == 4 and v.size == 5
    np.testing.assert_array_equal(v.encode(["a", "d", "zzz", None]), [1, 4, 0, 0])
    assert v.encode(np.array(["b"])).dtype == np.int32
    assert v.decode([0, 1, 4, 5, -1]).tolist() == [None, "a", "d", None, None]


def test_user_vocab_sorted_and_unknown() -> None:
    v = Vocabulary.for_users(pa.array(["u3", "u1", "u2", "u1"]))
    assert v.ids.to_pylist() == ["u1", "u2", "u3"]
    assert len(v) == v.size == 3
    np.testing.assert_array_equal(v.encode(["u1", "u3", "nope"]), [0, 2, -1])
    assert v.decode(v.encode(["u2", "u1"])).tolist() == ["u2", "u1"]


def test_vocab_round_trip_parquet(tmp_path: Path) -> None:
    items = Vocabulary.for_items(["q", "p", "p"])
    users = Vocabulary.for_users(["z", "y"])
    items.save(tmp_path / "i.parquet")
    users.save(tmp_path / "u.parquet")
    items2 = Vocabulary.load(tmp_path / "i.parquet")
    users2 = Vocabulary.load(tmp_path / "u.parquet")
    assert items2 == items and items2.kind == "item"
    assert users2 == users and users2.kind == "user"
    np.testing.assert_array_equal(items2.encode(["p", "q", "r"]), [1, 2, 0])
    with pytest.raises(ValueError):
        Vocabulary.load(tmp_path / "i.parquet", kind="user")


def test_vocab_rejects_duplicates() -> None:
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"], "item")


def test_db_item_vocab_matches_in_memory(con: duckdb.DuckDBPyConnection) -> None:
    assert build_item_vocab(con) == Vocabulary.for_items([r[1] for r in ROWS])


# -- building ---------------------------------------------------------------------------------
def test_build_sequences_layout(con: duckdb.DuckDBPyConnection) -> None:
    s = build_sequences(con, source_version="v1")
    assert s.user_vocab.ids.to_pylist() == ["a", "b", "c"]
    assert s.item_vocab.ids.to_pylist() == ["x", "y", "z"]  # x:3, y:3 (tie -> id), z:1
    assert (s.n_users, s.n_items, s.n_events) == (3, 3, 7)
    assert s.offsets.dtype == np.int64 and s.items.dtype == np.int32
    assert s.event_types.dtype == np.int8 and s.timestamps.dtype == np.int64
    np.testing.assert_array_equal(s.offsets, [0, 3, 6, 7])
    np.testing.assert_array_equal(s.lengths(), [3, 3, 1])
    items, types, ts = s.user(0)
    assert s.item_vocab.decode(items).tolist() == ["z", "x", "y"]
    np.testing.assert_array_equal(types, [0, 3, 0])
    np.testing.assert_array_equal(ts, [50, 60, 70])
    assert np.shares_memory(items, s.items)  # a view
    assert s.source_version == "v1"
    assert s.items.min() >= 1  # 0 stays free for padding


def test_timestamp_ties_broken_by_seq(con: duckdb.DuckDBPyConnection) -> None:
    s = build_sequences(con)
    items, types, ts = s.user(1)
    # b: (100, x, seq 8), then the tie at 200: seq 7 (y) before seq 9 (x)
    assert s.item_vocab.decode(items).tolist() == ["x", "y", "x"]
    np.testing.assert_array_equal(ts, [100, 200, 200])
    np.testing.assert_array_equal(types, [0, 1, 0])


def test_where_filter_and_given_vocab(con: duckdb.DuckDBPyConnection) -> None:
    s = build_sequences(con, where="timestamp >= 60")
    assert s.user_vocab.ids.to_pylist() == ["a", "b"]
    assert s.n_events == 5
    full = build_sequences(con)
    # with the full vocabularies, user c keeps an (empty) slot and ids keep their meaning
    s2 = build_sequences(con, where="timestamp >= 60",
                         user_vocab=full.user_vocab, item_vocab=full.item_vocab)
    np.testing.assert_array_equal(s2.lengths(), [2, 3, 0])
    # a vocabulary lacking an item drops its events instead of encoding them as padding
    only_x = Vocabulary(["x"], "item")
    s3 = build_sequences(con, item_vocab=only_x)
    assert s3.n_events == 3 and set(s3.items.tolist()) == {1}


def test_empty_store(tmp_path: Path) -> None:
    s = build_sequences(make_events([]))
    assert (s.n_users, s.n_items, s.n_events) == (0, 0, 0)
    np.testing.assert_array_equal(s.offsets, [0])
    loaded = Sequences.load(s.save(tmp_path / "e"))
    assert loaded.n_events == 0


# -- subset -----------------------------------------------------------------------------------
def test_subset_keeps_user_alignment(con: duckdb.DuckDBPyConnection) -> None:
    s = build_sequences(con)
    mask = s.timestamps >= 100  # empties users a (ts 50..70) and c (ts 10), keeps b
    sub = s.subset(mask)
    assert sub.n_users == s.n_users
    np.testing.assert_array_equal(sub.lengths(), [0, 3, 0])
    np.testing.assert_array_equal(sub.user(1)[0], s.user(1)[0])
    assert sub.user_vocab is s.user_vocab and sub.item_vocab is s.item_vocab
    # per-user order is preserved for an arbitrary mask
    rng = np.random.default_rng(0)
    m = rng.random(s.n_events) < 0.5
    sub = s.subset(m)
    users = s.event_users()
    for u in range(s.n_users):
        np.testing.assert_array_equal(sub.user(u)[2], s.timestamps[m & (users == u)])
    with pytest.raises(ValueError):
        s.subset(np.ones(3, dtype=bool))


def test_positions_and_event_users(con: duckdb.DuckDBPyConnection) -> None:
    s = build_sequences(con)
    np.testing.assert_array_equal(s.event_users(), [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(s.positions(), [0, 1, 2, 0, 1, 2, 0])


# -- persistence and cache --------------------------------------------------------------------
def test_save_load_mmap(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    s = build_sequences(con)
    s.save(tmp_path / "s", source_version="store@3")
    for mmap, kind in ((True, np.memmap), (False, np.ndarray)):
        t = Sequences.load(tmp_path / "s", mmap=mmap)
        assert isinstance(t.items, kind)
        assert t.source_version == "store@3"
        for name in ("offsets", "items", "event_types", "timestamps"):
            np.testing.assert_array_equal(getattr(t, name), getattr(s, name))
            assert getattr(t, name).dtype == getattr(s, name).dtype
        assert t.user_vocab == s.user_vocab and t.item_vocab == s.item_vocab
    loaded = Sequences.load(tmp_path / "s")
    with pytest.raises(ValueError):  # memory maps are read-only
        loaded.items[0] = 5


def test_cache_hit_loads_from_disk(tmp_path: Path) -> None:
    con = make_events(ROWS)
    cache = SequenceCache(tmp_path / "cache")
    calls: list[int] = []

    def builder(c: duckdb.DuckDBPyConnection) -> Sequences:
        calls.append(1)
        return build_sequences(c)

    first = cache.get_or_build(con, "store-v1", builder)
    assert calls == [1] and (cache.hits, cache.misses) == (0, 1)
    assert cache.contains("store-v1")
    con.close()  # a hit must not touch the database at all
    second = cache.get_or_build(con, "store-v1", builder)
    assert calls == [1] and (cache.hits, cache.misses) == (1, 1)
    assert isinstance(second.items, np.memmap)  # came from the .npy files
    assert second.source_version == "store-v1"
    np.testing.assert_array_equal(second.items, first.items)
    np.testing.assert_array_equal(second.offsets, first.offsets)
    # a new store version is a different key -> rebuilt
    con2 = make_events([*ROWS, ("d", "x", 500, 0, 10)])
    third = cache.get_or_build(con2, "store-v2", builder)
    assert calls == [1, 1] and third.n_users == 4
    assert cache.path_for("store-v1") != cache.path_for("store-v2")
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # no leftovers
    cache.invalidate("store-v1")
    assert not cache.contains("store-v1")


def test_cache_key_with_odd_characters(tmp_path: Path) -> None:
    cache = SequenceCache(tmp_path)
    p = cache.path_for("../store v1/∆")
    assert p.parent == tmp_path and "/" not in p.name


# -- performance ------------------------------------------------------------------------------
@pytest.mark.slow
def test_build_10m_events_under_10s() -> None:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE events AS SELECT
          substr(md5((hash(i) % 200000)::VARCHAR), 1, 16) AS user_id,
          ((hash(i * 7 + 1) % 100000) * (hash(i * 3) % 7 + 1) % 300000)::VARCHAR AS item_id,
          (1600000000000 + (hash(i + 17) % 31536000000))::BIGINT AS timestamp,
          (hash(i + 3) % 5)::UTINYINT AS event_type,
          NULL::VARCHAR AS session_id, NULL::VARCHAR AS category, NULL::DOUBLE AS price,
          NULL::INTEGER AS quantity, i::BIGINT AS seq, 1::INTEGER AS batch_id
        FROM range(10000000) t(i)"""
    )
    t0 = time.perf_counter()
    s = build_sequences(con)
    elapsed = time.perf_counter() - t0
    assert s.n_events == 10_000_000
    assert elapsed <= 10.0, f"build took {elapsed:.1f}s"
