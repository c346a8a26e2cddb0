from __future__ import annotations

import duckdb
import numpy as np
import pytest

from shopseq.data.schema import EVENT_COLUMNS
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.splits import (
    EvalSet,
    GlobalTimeSplit,
    LeaveOneOutSplit,
    SlidingWindowSplit,
    Split,
    make_splitter,
)

T0 = 1_700_000_000_000  # ms


def make_store(n_events: int = 6000, n_users: int = 300) -> duckdb.DuckDBPyConnection:
    """Synthetic canonical store: coarse timestamps (many ties), plus users with 1 and 2 events."""
    con = duckdb.connect()
    cols = ", ".join(f"{name} {typ}" for name, typ, _, _ in EVENT_COLUMNS)
    con.execute(f"CREATE TABLE events ({cols})")
    con.execute(
        f"""INSERT INTO events (user_id, item_id, timestamp, event_type, seq, batch_id)
        SELECT 'u' || lpad((hash(i) % {n_users})::VARCHAR, 4, '0'),
               'i' || (hash(i * 31 + 7) % 120)::VARCHAR,
               {T0} + (hash(i * 17 + 3) % 500)::BIGINT * 60000,
               (hash(i * 5 + 1) % 5)::UTINYINT,
               i, 1
        FROM range({n_events}) t(i)"""
    )
    con.execute(
        f"""INSERT INTO events (user_id, item_id, timestamp, event_type, seq, batch_id) VALUES
        ('solo', 'i1', {T0}, 0, 100000, 2),
        ('duo', 'i2', {T0 + 1}, 0, 100001, 2), ('duo', 'i3', {T0 + 2}, 0, 100002, 2)"""
    )
    return con


@pytest.fixture(scope="module")
def seqs() -> Sequences:
    return build_sequences(make_store())


def user_events(s: Sequences, u: int) -> tuple[np.ndarray, np.ndarray]:
    items, _, ts = s.user(u)
    return np.asarray(items), np.asarray(ts)


def check_eval_set_shapes(e: EvalSet) -> None:
    assert len(e.history_offsets) == len(e.target_offsets) == e.n_users + 1
    assert e.history_offsets[-1] == len(e.history_items) == len(e.history_types) == len(e.history_timestamps)
    assert e.target_offsets[-1] == len(e.target_items) == len(e.target_types) == len(e.target_timestamps)
    assert (e.target_lengths() >= 1).all()
    assert np.all(np.diff(e.users) > 0)  # sorted, unique


# -- global time split ------------------------------------------------------------------------
def test_time_split_no_leakage(seqs: Sequences) -> None:
    sp = GlobalTimeSplit().split(seqs)
    vs, ts_ = sp.cuts["valid_start"], sp.cuts["test_start"]
    assert vs <= ts_
    for e in (sp.valid, sp.test):
        check_eval_set_shapes(e)
        assert e.n_users > 0
    # no test event is older than any training event
    assert sp.train.timestamps.max() < vs <= sp.test.target_timestamps.min()
    assert sp.train.timestamps.max() < sp.test.target_timestamps.min()
    assert sp.valid.target_timestamps.min() >= vs and sp.valid.target_timestamps.max() < ts_
    # every history lies strictly before its targets' window
    assert sp.valid.history_timestamps.max() < vs
    assert sp.test.history_timestamps.max() < ts_
    # ... and per user, history is exactly the user's events before the cut, targets the window
    for e, start, end in ((sp.valid, vs, ts_), (sp.test, ts_, np.iinfo(np.int64).max)):
        for k, u in enumerate(e.users):
            items, ts = user_events(seqs, int(u))
            h_items, _, h_ts = e.history(k)
            t_items, _, t_ts = e.targets(k)
            np.testing.assert_array_equal(h_items, items[ts < start])
            np.testing.assert_array_equal(t_items, items[(ts >= start) & (ts < end)])
            assert h_ts.max() < t_ts.min()
            assert e.next_items()[k] == t_items[0]


def test_time_split_train_is_aligned_and_complete(seqs: Sequences) -> None:
    sp = GlobalTimeSplit(min_history=0).split(seqs)
    assert sp.train.n_users == seqs.n_users and sp.train.user_vocab is seqs.user_vocab
    vs = sp.cuts["valid_start"]
    np.testing.assert_array_equal(sp.train.lengths(), [(user_events(seqs, u)[1] < vs).sum()
                                                       for u in range(seqs.n_users)])
    # with min_history=0 every event is in exactly one of train / valid targets / test targets
    assert sp.train.n_events + sp.valid.n_targets + sp.test.n_targets == seqs.n_events


def test_time_split_fractions_and_explicit_cuts(seqs: Sequences) -> None:
    sp = GlobalTimeSplit(valid_fraction=0.2, test_fraction=0.1, min_history=0).split(seqs)
    n = seqs.n_events
    # coarse timestamps -> ties at the cut; allow one timestamp bucket of slack (~n / 500)
    assert abs(sp.test.n_targets - 0.1 * n) < 0.02 * n
    assert abs(sp.valid.n_targets - 0.2 * n) < 0.02 * n
    cut_v, cut_t = T0 + 300 * 60000, T0 + 400 * 60000
    ex = GlobalTimeSplit(valid_start=cut_v, test_start=cut_t).split(seqs)
    assert ex.cuts == {"valid_start": cut_v, "test_start": cut_t}
    assert ex.train.timestamps.max() < cut_v
    assert ex.test.target_timestamps.min() >= cut_t
    with pytest.raises(ValueError):
        GlobalTimeSplit(valid_start=cut_t, test_start=cut_v)
    with pytest.raises(ValueError):
        GlobalTimeSplit(valid_start=cut_v)
    with pytest.raises(ValueError):
        GlobalTimeSplit(valid_fraction=0.6, test_fraction=0.5)


def test_time_split_min_history_excludes_cold_users(seqs: Sequences) -> None:
    sp = GlobalTimeSplit(min_history=1).split(seqs)
    assert (sp.valid.history_lengths() >= 1).all() and (sp.test.history_lengths() >= 1).all()
    cold = GlobalTimeSplit(min_history=0).split(seqs)
    assert cold.test.n_users >= sp.test.n_users


# -- leave one out ----------------------------------------------------------------------------
def test_leave_one_out_positions(seqs: Sequences) -> None:
    sp = LeaveOneOutSplit().split(seqs)
    lengths = seqs.lengths()
    evaluated = np.flatnonzero(lengths >= 3)
    np.testing.assert_array_equal(sp.valid.users, evaluated)
    np.testing.assert_array_equal(sp.test.users, evaluated)
    check_eval_set_shapes(sp.valid)
    check_eval_set_shapes(sp.test)
    np.testing.assert_array_equal(sp.valid.target_lengths(), 1)
    np.testing.assert_array_equal(sp.test.target_lengths(), 1)
    for k, u in enumerate(evaluated):
        items, ts = user_events(seqs, int(u))
        n = len(items)
        train_items, _, train_ts = sp.train.user(int(u))
        # training sequence is exactly the first n-2 events: the test (n-1) and validation (n-2)
        # positions never reach the training input
        np.testing.assert_array_equal(train_items, items[: n - 2])
        np.testing.assert_array_equal(train_ts, ts[: n - 2])
        assert sp.valid.targets(k)[0][0] == items[n - 2]
        assert sp.test.targets(k)[0][0] == items[n - 1]
        np.testing.assert_array_equal(sp.valid.history(k)[0], items[: n - 2])
        np.testing.assert_array_equal(sp.test.history(k)[0], items[: n - 1])


def test_leave_one_out_short_users_train_only(seqs: Sequences) -> None:
    sp = LeaveOneOutSplit().split(seqs)
    short = np.flatnonzero(seqs.lengths() < 3)
    names = seqs.user_vocab.decode(short).tolist()
    assert {"solo", "duo"} <= set(names)
    np.testing.assert_array_equal(sp.train.lengths()[short], seqs.lengths()[short])
    assert not np.isin(short, sp.valid.users).any() and not np.isin(short, sp.test.users).any()
    total = sp.train.n_events + sp.valid.n_targets + sp.test.n_targets
    assert total == seqs.n_events
    assert "published" in LeaveOneOutSplit().describe()


# -- sliding windows --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "splitter",
    [
        SlidingWindowSplit(n_windows=3, window_fraction=0.1),
        SlidingWindowSplit(n_windows=4, window_ms=40 * 60000),
    ],
)
def test_sliding_windows_move_forward(seqs: Sequences, splitter: SlidingWindowSplit) -> None:
    folds = splitter.split(seqs)
    assert len(folds) == splitter.n_windows
    prev: Split | None = None
    for f in folds:
        vs, ts_, te = f.cuts["valid_start"], f.cuts["test_start"], f.cuts["test_end"]
        assert vs < ts_ < te
        # within a fold: train < valid window < test window, histories before their windows
        assert f.train.timestamps.max() < vs
        assert vs <= f.valid.target_timestamps.min() and f.valid.target_timestamps.max() < ts_
        assert ts_ <= f.test.target_timestamps.min() and f.test.target_timestamps.max() < te
        assert f.valid.history_timestamps.max() < vs and f.test.history_timestamps.max() < ts_
        check_eval_set_shapes(f.valid)
        check_eval_set_shapes(f.test)
        if prev is not None:
            # across folds: test windows are disjoint and later; the origin rolls forward
            assert prev.cuts["test_end"] <= ts_
            assert prev.test.target_timestamps.max() < f.test.target_timestamps.min()
            assert f.cuts["valid_start"] == prev.cuts["test_start"]
            assert f.train.n_events > prev.train.n_events
            # the previous fold's training events are a prefix of this fold's, per user
            pl, fl = prev.train.lengths(), f.train.lengths()
            assert (fl >= pl).all()
        prev = f
    assert folds[-1].cuts["test_end"] == int(seqs.timestamps.max()) + 1
    if splitter.window_ms is not None:
        np.testing.assert_array_equal(np.diff(splitter.boundaries(seqs)), splitter.window_ms)


def test_sliding_window_validation() -> None:
    with pytest.raises(ValueError):
        SlidingWindowSplit(n_windows=0)
    with pytest.raises(ValueError):
        SlidingWindowSplit(n_windows=2, window_ms=10, window_fraction=0.1)
    with pytest.raises(ValueError):
        SlidingWindowSplit(n_windows=4, window_fraction=0.3)


# -- reporting --------------------------------------------------------------------------------
def test_describe_and_summary(seqs: Sequences) -> None:
    sp = GlobalTimeSplit().split(seqs)
    s = sp.summary()
    for key in ("train_events", "train_users", "valid_users", "valid_targets", "test_users",
                "test_targets", "valid_start", "test_start"):
        assert isinstance(s[key], int)
    assert s["train_events"] == sp.train.n_events and s["test_targets"] == sp.test.n_targets
    text = sp.describe()
    assert "Global time split" in text
    assert f"{s['train_events']:,}" in text and f"{s['test_targets']:,}" in text
    assert "fold 2 of 3" in SlidingWindowSplit(3).split(seqs)[1].describe()


def test_make_splitter() -> None:
    assert isinstance(make_splitter(), GlobalTimeSplit)
    assert isinstance(make_splitter("loo"), LeaveOneOutSplit)
    assert make_splitter("sliding", n_windows=2).n_windows == 2
    with pytest.raises(ValueError):
        make_splitter("random")


def test_split_works_on_memory_mapped_sequences(seqs: Sequences, tmp_path) -> None:
    loaded = Sequences.load(seqs.save(tmp_path / "s"), mmap=True)
    a, b = GlobalTimeSplit().split(seqs), GlobalTimeSplit().split(loaded)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(a.test.target_items, b.test.target_items)


def _eval_set(histories: list[list[tuple[int, int]]], windows: list[list[tuple[int, int]]]) -> EvalSet:
    """An EvalSet from per-user (item, type) lists; timestamps count up within each user."""
    def flat(rows: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        items = np.array([i for r in rows for i, _ in r], dtype=np.int32)
        types = np.array([t for r in rows for _, t in r], dtype=np.int8)
        return np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64), items, types

    h_off, h_items, h_types = flat(histories)
    t_off, t_items, t_types = flat(windows)
    return EvalSet(users=np.arange(len(histories), dtype=np.int32), history_offsets=h_off, history_items=h_items,
                   history_types=h_types, history_timestamps=np.arange(len(h_items), dtype=np.int64),
                   target_offsets=t_off, target_items=t_items, target_types=t_types,
                   target_timestamps=np.arange(len(t_items), dtype=np.int64) + 100)


@pytest.mark.parametrize("window_context", [False, True])
def test_next_purchase_targets_with_and_without_the_visit_before_them(window_context: bool) -> None:
    view, cart, buy = 0, 1, 3
    es = _eval_set(
        histories=[[(1, view), (2, view)], [(7, view)], []],
        windows=[[(3, view), (4, cart), (4, buy), (5, view), (6, buy)], [(8, view)], [(9, buy)]],
    )
    got = es.with_target_types((buy,), window_context=window_context)
    np.testing.assert_array_equal(got.users, [0, 2])  # user 1 bought nothing in the window
    np.testing.assert_array_equal(got.target_items, [4, 6, 9])
    np.testing.assert_array_equal(got.target_offsets, [0, 2, 3])
    # with the visit's context, the cart of item 4 is in the input of the purchase of item 4
    hist0 = [1, 2, 3, 4] if window_context else [1, 2]
    np.testing.assert_array_equal(got.history_items, hist0)
    np.testing.assert_array_equal(got.history_offsets, [0, len(hist0), len(hist0)])
    np.testing.assert_array_equal(got.history_types, [view, view, view, cart][:len(hist0)])
    assert (np.diff(got.history_timestamps) > 0).all()  # still in time order
