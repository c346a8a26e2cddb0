"""Baselines: the shared model contract, hand-checked counting, and that they learn the planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from contract import check_recommender_contract, shop_split

from shopseq.data.schema import EventType
from shopseq.data.sequences import Sequences
from shopseq.data.vocab import Vocabulary
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models import registry
from shopseq.models.base import Histories, Recommender
from shopseq.models.baselines import (
    CSR,
    CartFirst,
    ItemKNN,
    ItemKNNConfig,
    Markov,
    Pop,
    PopRecent,
    Repeat,
)

BASELINES: dict[str, type[Recommender]] = {c.name: c for c in (Pop, PopRecent, Markov, ItemKNN, Repeat, CartFirst)}
DAY = 86_400_000


def build(name: str, n_items: int, **config: object) -> Recommender:
    cls = BASELINES[name]
    return cls(cls.config_class(**config), n_items)


def seqs_from_lists(users: list[list[int]], n_items: int, timestamps: list[list[int]] | None = None) -> Sequences:
    lengths = np.array([len(u) for u in users])
    items = np.array([i for u in users for i in u], dtype=np.int32)
    ts = (np.array([t for u in timestamps for t in u], dtype=np.int64) if timestamps
          else np.arange(len(items), dtype=np.int64))
    return Sequences(
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=items, event_types=np.zeros(len(items), np.int8), timestamps=ts,
        user_vocab=Vocabulary([f"u{k}" for k in range(len(users))], "user"),
        item_vocab=Vocabulary([f"i{k}" for k in range(1, n_items + 1)], "item"),
    )


def top(model: Recommender, history: list[int], k: int) -> list[int]:
    ids, _ = model.recommend(Histories.from_lists([history], model.max_len), k=k, filter_seen=False)
    return ids[0].tolist()


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_contract(name: str, tmp_path: Path) -> None:
    split = shop_split()
    check_recommender_contract(lambda: build(name, split.train.n_items), split.train, split.test, tmp_path=tmp_path)


def test_registered_under_their_names() -> None:
    for name, cls in BASELINES.items():
        assert registry.MODELS[name] is cls
        assert cls.config_class().model == name
    assert PopRecent.config_class().window_days == 7.0


def test_unfitted_and_bad_training_data_are_reported() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        build("markov", 5).score(Histories.from_lists([[1]], 5))
    with pytest.raises(ValueError, match="items"):
        build("pop", 2).fit(seqs_from_lists([[1, 2, 3]], 3))


# ------------------------------------------------------------------------------------------- sparse helper
def test_csr_matches_dense_reference() -> None:
    rng = np.random.default_rng(0)
    n = 9
    r, c = rng.integers(0, n, 200), rng.integers(0, n, 200)
    w = rng.random(200)
    m = CSR.from_pairs(r, c, n, w)
    dense = np.zeros((n, n))
    np.add.at(dense, (r, c), w)
    rebuilt = np.zeros((n, n))
    rebuilt[m.row_ids(), m.indices] = m.data
    np.testing.assert_allclose(rebuilt, dense, rtol=1e-6)
    # combine == (sparse votes) @ matrix
    out, rows, weights = np.array([0, 0, 2, 1]), np.array([3, 5, 3, 0]), np.array([1.0, 0.5, 2.0, 1.0])
    votes = np.zeros((3, n))
    np.add.at(votes, (out, rows), weights)
    np.testing.assert_allclose(m.combine(out, rows, weights, 3).numpy(), votes @ dense, rtol=1e-5)
    # top-k per row keeps the k largest
    top2 = m.top_per_row(2)
    kept = np.zeros((n, n))
    kept[top2.row_ids(), top2.indices] = top2.data
    for i in range(n):
        expected = np.sort(dense[i][dense[i] > 0])[::-1][:2]
        np.testing.assert_allclose(np.sort(kept[i][kept[i] > 0])[::-1], expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------- hand-checked
def test_pop_and_recent_window() -> None:
    # all time: 1 x4, 3 x3, 2 x2; the last 1.5 days: only 3; the last 7 days: 3 x3, 1 x2, 2 x2
    train = seqs_from_lists([[1, 1, 1, 1, 2, 3, 3], [2, 3]], 4,
                            [[0, DAY, 2 * DAY, 3 * DAY, 5 * DAY, 8 * DAY + DAY // 2, 9 * DAY], [6 * DAY, 9 * DAY]])
    assert top(build("pop", 4).fit(train), [], 4) == [1, 3, 2, 4]
    assert top(build("pop", 4, window_days=1.5).fit(train), [], 4) == [3, 1, 2, 4]  # all-time breaks the 0-ties
    assert top(build("pop_recent", 4).fit(train), [], 3) == [3, 1, 2]  # 1 and 2 tie at 2: all-time decides


def test_markov_counts_transitions_within_users_only() -> None:
    train = seqs_from_lists([[1, 2, 3], [1, 2], [1, 3], [4, 4, 4, 4, 4]], 5)
    m = build("markov", 5).fit(train)
    assert top(m, [3, 1], 2) == [2, 3]  # from 1: 2 twice, 3 once
    s = m.score(Histories.from_lists([[1], [3], []], 50)).numpy()
    np.testing.assert_allclose(s[0, 2] - s[0, 3], 1 / 3, rtol=1e-5)  # a probability row (+ tiny back-off)
    assert s[1, 1] < s[1, 4]  # no 3 -> 1 transition across users: pure popularity (4 most popular)
    assert np.argmax(s[2, 1:]) + 1 == 4  # empty history: popularity
    assert m.score(Histories.from_lists([[4]], 50))[0, 4] > 0.9  # 4 -> 4 four times out of four
    no_loops = build("markov", 5, self_loops=False).fit(train)
    assert no_loops.score(Histories.from_lists([[4]], 50))[0, 4] == pytest.approx(0.5)  # back-off only


def test_itemknn_similarity_window_and_neighbours() -> None:
    train = seqs_from_lists([[1, 2, 3, 4], [5, 1, 2], [6, 6, 6]], 6)
    knn = ItemKNN(ItemKNNConfig(window=1, neighbours=10, shrink=0), 6).fit(train)
    sim = np.zeros((7, 7))
    assert knn.similarity is not None
    sim[knn.similarity.row_ids(), knn.similarity.indices] = knn.similarity.data
    np.testing.assert_allclose(sim, sim.T, rtol=1e-6)  # co-occurrence is symmetric
    assert sim[1, 3] == 0 and sim[4, 5] == 0  # window 1: only adjacent; no pairs across users
    np.testing.assert_allclose(sim[1, 2], 2 / np.sqrt(2 * 2), rtol=1e-6)  # cosine: c_12 / sqrt(n_1 n_2)
    assert sim[6, 6] > 0  # re-viewing 6 makes it its own neighbour
    assert top(knn, [1], 1) == [2]
    wide = ItemKNN(ItemKNNConfig(window=3, neighbours=1, self_similarity=False), 6).fit(train)
    assert wide.similarity is not None and np.diff(wide.similarity.indptr).max() == 1
    # the most recent item votes most: after [3, 1] the neighbours of 1 lead
    assert top(ItemKNN(ItemKNNConfig(window=1), 6).fit(train), [3, 1], 1) == [2]


def test_repeat_ranks_own_items_by_recency_weighted_frequency() -> None:
    train = seqs_from_lists([[5, 5, 5, 5, 4, 4, 4]], 6)
    rep = build("repeat", 6, decay=0.5).fit(train)
    # history 1, 2, 2 (most recent last): 2 = 1 + 0.5, 1 = 0.25; then the rest by popularity: 5, 4
    assert top(rep, [1, 2, 2], 4) == [2, 1, 5, 4]
    # everything in the history beats any popular item, even the oldest event of a full window
    long = [3] + [6] * 49
    assert top(build("repeat", 6, max_len=50).fit(train), long, 2) == [6, 3]


def test_cartfirst_puts_open_carts_first_then_the_history_by_recency() -> None:
    v, c, p = int(EventType.VIEW), int(EventType.CART), int(EventType.PURCHASE)
    model = build("cartfirst", 9).fit(seqs_from_lists([[9, 9, 9, 8, 8, 7]], 9))  # popularity: 9, 8, 7
    # 2 and 6 carted and never bought (6 more recently); 4 carted, then bought; 1, 3, 5 only viewed
    items = [[1, 2, 3, 4, 4, 6, 5]]
    types = [[v, c, v, c, p, c, v]]
    h = Histories(np.array(items), np.array(types), np.zeros((1, 7), np.int64), np.array([7]))
    ranked, _ = model.recommend(h, k=9, filter_seen=False)
    assert ranked[0].tolist() == [6, 2, 5, 4, 3, 1, 9, 8, 7]
    # without event types (all views) it is repeat-by-recency
    h.types[:] = v
    ranked, _ = model.recommend(h, k=6, filter_seen=False)
    assert ranked[0].tolist() == [5, 6, 4, 3, 2, 1]


def test_encode_is_the_mean_bag_of_the_window() -> None:
    m = build("pop", 5, max_len=3).fit(seqs_from_lists([[1, 2]], 5))
    z = m.encode(Histories.from_lists([[1, 2, 2, 3], []], 10))  # only the last 3 events count
    np.testing.assert_allclose(z[0], [0, 0, 2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(z[1], 0)
    assert z.dtype == np.float32


# ------------------------------------------------------------------------------------------- learning
# twice the contract shop: ~1,000 time-split and ~3,400 leave-one-out test users keep the margins clear of noise
LEARN_SHOP = {"n_users": 4000, "n_items": 1000, "chunk_users": 4000}


def ndcg(name: str, kind: str, filter_seen: bool, key: str = "ndcg@10") -> float:
    split = shop_split(kind, **LEARN_SHOP)
    model = build(name, split.train.n_items).fit(split.train)
    return evaluate(model, split.test, EvalConfig(ks=(10,), filter_seen=filter_seen)).metrics[key]


@pytest.mark.parametrize("name", ["markov", "itemknn"])
@pytest.mark.parametrize(("kind", "filter_seen"), [("time", False), ("loo", False), ("loo", True)])
def test_sequential_baselines_beat_popularity(name: str, kind: str, filter_seen: bool) -> None:
    assert ndcg(name, kind, filter_seen) > 1.1 * ndcg("pop", kind, filter_seen)


def test_repeat_beats_popularity_on_repeat_targets() -> None:
    for kind in ("time", "loo"):
        assert ndcg("repeat", kind, False, "repeat_ndcg@10") > 1.5 * ndcg("pop", kind, False, "repeat_ndcg@10")
    assert ndcg("repeat", "loo", False) > ndcg("pop", "loo", False)


def test_baselines_are_fast_enough_to_be_baselines() -> None:
    split = shop_split("loo")
    for name in BASELINES:
        model = build(name, split.train.n_items).fit(split.train)
        r = evaluate(model, split.test, EvalConfig(ks=(10,)))
        assert r.seconds < 5.0, (name, r.seconds)  # generous: catches per-user Python loops, not noise
        assert torch.isfinite(model.score(Histories.from_lists([[1, 2]], 50))[0, 1:]).all()
