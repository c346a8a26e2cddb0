"""Full-ranking evaluation: metric definitions on hand-computed examples, masking, protocol options."""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import pytest
import torch

from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.evaluation import (
    EvalConfig,
    coverage,
    evaluate,
    ideal_dcg,
    per_target_metrics,
    per_user_metrics,
    target_ranks,
)
from shopseq.models.base import Histories, ModelConfig, Recommender


def log2(x: float) -> float:
    return math.log2(x)


def make_eval_set(histories: list[list[int]], targets: list[list[int]]) -> EvalSet:
    """An EvalSet from lists; history timestamps hold the user's row, so test models can cheat."""
    h_len = np.array([len(h) for h in histories], dtype=np.int64)
    t_len = np.array([len(t) for t in targets], dtype=np.int64)
    h_items = np.array([i for h in histories for i in h], dtype=np.int32)
    t_items = np.array([i for t in targets for i in t], dtype=np.int32)
    rows = np.repeat(np.arange(len(histories)), h_len).astype(np.int64)
    return EvalSet(
        users=np.arange(len(histories), dtype=np.int32),
        history_offsets=np.concatenate([[0], np.cumsum(h_len)]).astype(np.int64),
        history_items=h_items,
        history_types=np.zeros(len(h_items), np.int8),
        history_timestamps=rows,
        target_offsets=np.concatenate([[0], np.cumsum(t_len)]).astype(np.int64),
        target_items=t_items,
        target_types=np.zeros(len(t_items), np.int8),
        target_timestamps=np.zeros(len(t_items), np.int64),
    )


class FnModel(Recommender):
    """A test model whose scores come from a function of the histories."""

    name = "fn"
    config_class = ModelConfig

    def __init__(self, n_items: int, fn: Any, max_len: int = 50) -> None:
        super().__init__(ModelConfig(model="fn"), n_items)
        self.fn = fn
        self._max_len = max_len

    @property
    def max_len(self) -> int:
        return self._max_len

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        return self

    def score(self, histories: Histories) -> torch.Tensor:
        return self.fn(histories)

    def encode(self, histories: Histories) -> np.ndarray:
        return np.zeros((histories.batch_size, 1), np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        pass


def oracle(eval_set: EvalSet, n_items: int, first_only: bool = True) -> FnModel:
    """Scores the next target (or every target) of the user highest; the user's row is read from the
    planted history timestamps."""
    def fn(h: Histories) -> torch.Tensor:
        rows = h.timestamps[:, -1]
        s = torch.zeros(len(rows), n_items + 1)
        for b, r in enumerate(rows):
            items = eval_set.targets(int(r))[0]
            s[b, items[:1] if first_only else items] = 1.0
        return s
    return FnModel(n_items, fn)


def constant(n_items: int) -> FnModel:
    return FnModel(n_items, lambda h: torch.ones(h.batch_size, n_items + 1))


def random_scorer(n_items: int, seed: int = 0) -> FnModel:
    def fn(h: Histories) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed + int(h.timestamps[0, -1]))
        return torch.rand(h.batch_size, n_items + 1, generator=gen)
    return FnModel(n_items, fn)


def random_eval_set(n_users: int, n_items: int, seed: int = 0, max_targets: int = 1) -> EvalSet:
    rng = np.random.default_rng(seed)
    hist = [list(rng.integers(1, n_items + 1, rng.integers(1, 8))) for _ in range(n_users)]
    tgt = [list(rng.integers(1, n_items + 1, rng.integers(1, max_targets + 1))) for _ in range(n_users)]
    return make_eval_set(hist, tgt)


# ------------------------------------------------------------------------------------- metric functions
def test_target_ranks_ties_are_pessimistic_and_masked_is_unreachable() -> None:
    scores = torch.tensor([
        [-torch.inf, 0.5, 0.9, 0.5, 0.1, 0.5],
        [-torch.inf, 1.0, 1.0, 1.0, 1.0, 1.0],
        [-torch.inf, -torch.inf, 0.3, 0.2, torch.nan, 0.1],
    ])
    ranks = target_ranks(scores, np.array([0, 0, 0, 1, 2, 2, 2]), np.array([2, 1, 4, 3, 1, 5, 4]))
    # row 0: 0.9 is top; 0.5 ties with two others -> behind both (0.9 and 2 ties) = 3; 0.1 is last of 5
    # row 1: constant -> behind all 4 others; row 2: -inf and NaN targets are unreachable
    np.testing.assert_array_equal(ranks, [0, 3, 4, 4, np.inf, 2, np.inf])


def test_tied_targets_share_the_last_places_of_their_tie_group() -> None:
    scores = torch.tensor([[-torch.inf, 0.9, 0.5, 0.5, 0.5, 0.1]])
    # targets 2 and 3 tie with non-target 4 behind item 1: the group holds places 1..3, targets 2 and 3
    ranks = target_ranks(scores, np.array([0, 0, 0]), np.array([2, 3, 5]))
    np.testing.assert_array_equal(np.sort(ranks[:2]), [2, 3])
    assert ranks[2] == 4


def test_target_ranks_with_candidates_counts_only_negatives() -> None:
    scores = torch.tensor([[-torch.inf, 0.9, 0.8, 0.7, 0.6, 0.5]])
    cand = torch.tensor([[False, True, False, True, False, False]])
    # target item 4 (0.6): among candidates {1, 3} both score higher -> 2; item 2 (0.8): only item 1
    np.testing.assert_array_equal(target_ranks(scores, np.array([0, 0]), np.array([4, 2]), candidates=cand), [2, 1])


def test_single_target_metrics_by_hand() -> None:
    ranks = np.array([0.0, 3.0, 12.0, np.inf])
    m = per_user_metrics(ranks, np.arange(5), ks=(1, 5))
    np.testing.assert_allclose(m["hr@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["hr@5"], [1, 1, 0, 0])
    np.testing.assert_allclose(m["recall@5"], m["hr@5"])
    np.testing.assert_allclose(m["precision@5"], [0.2, 0.2, 0, 0])
    np.testing.assert_allclose(m["f1@5"], [2 / 6, 2 / 6, 0, 0])  # 2 hr / (k + 1)
    np.testing.assert_allclose(m["ndcg@5"], [1.0, 1 / log2(5), 0, 0])
    np.testing.assert_allclose(m["ndcg@1"], [1.0, 0, 0, 0])
    np.testing.assert_allclose(m["mrr"], [1.0, 0.25, 1 / 13, 0.0])
    np.testing.assert_allclose(m["mrr@5"], [1.0, 0.25, 0, 0])


def test_set_target_metrics_by_hand() -> None:
    # user 0: T = {a, b, c} ranked 0, 2, 10; user 1: T = {d, e} ranked 1, 1 (tied, both pessimistic)
    ranks = np.array([0.0, 2.0, 10.0, 1.0, 1.0])
    m = per_user_metrics(ranks, np.array([0, 3, 5]), ks=(5,))
    np.testing.assert_allclose(m["hr@5"], [1, 1])
    np.testing.assert_allclose(m["recall@5"], [2 / 3, 1.0])
    np.testing.assert_allclose(m["precision@5"], [2 / 5, 2 / 5])
    p, r = 2 / 5, 2 / 3
    np.testing.assert_allclose(m["f1@5"][0], 2 * p * r / (p + r))
    idcg3 = 1 + 1 / log2(3) + 1 / log2(4)
    np.testing.assert_allclose(m["ndcg@5"][0], (1 + 1 / log2(4)) / idcg3)
    np.testing.assert_allclose(m["ndcg@5"][1], (2 / log2(3)) / (1 + 1 / log2(3)))
    assert m["ndcg@5"][1] < 1.0  # a tie never earns the ideal score
    np.testing.assert_allclose(m["mrr"], [1.0, 0.5])
    np.testing.assert_allclose(m["n_targets"], [3, 2])
    # ideal DCG saturates at k
    np.testing.assert_allclose(ideal_dcg(np.array([0, 1, 7]), 2), [0, 1, 1 + 1 / log2(3)])


def test_repeat_breakdown_and_coverage_functions() -> None:
    m = per_target_metrics(np.array([0.0, 4.0, 20.0, 1.0]), np.array([True, False, False, True]), ks=(2,))
    assert m["repeat_share"] == 0.5
    assert m["repeat_hr@2"] == 1.0 and m["new_hr@2"] == 0.0
    np.testing.assert_allclose(m["repeat_ndcg@2"], (1 + 1 / log2(3)) / 2)
    mark = np.zeros(11, bool)
    mark[[0, 3, 4]] = True  # 0 is padding: never counted
    assert coverage(mark, 10) == pytest.approx(0.2)
    assert coverage(np.array([[3, 4], [4, 5]]), 10) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------- the protocol
def test_oracle_gets_perfect_scores_next_and_all() -> None:
    es = random_eval_set(40, 30, seed=1, max_targets=4)
    for target in ("next", "all"):
        cfg = EvalConfig(ks=(5, 10), filter_seen=False, target=target, chunk_users=7)
        r = evaluate(oracle(es, 30, first_only=target == "next"), es, cfg)
        for key in ("hr@5", "ndcg@5", "ndcg@10", "mrr", "mrr@10", "recall@10"):
            assert r.metrics[key] == pytest.approx(1.0), (target, key)


def test_constant_scorer_does_not_beat_random() -> None:
    n_items = 200
    es = random_eval_set(300, n_items, seed=2)
    cfg = EvalConfig(ks=(10,), filter_seen=False)
    const = evaluate(constant(n_items), es, cfg)
    rand = evaluate(random_scorer(n_items), es, cfg)
    assert const.metrics["hr@10"] == 0.0 and const.metrics["ndcg@10"] == 0.0
    assert const.metrics["mrr"] <= rand.metrics["mrr"]
    assert 0.0 < rand.metrics["hr@10"] < 0.15  # ~ 10 / 200


def test_filter_seen_masks_whole_history_beyond_max_len() -> None:
    # the model reads only the last 2 events, but items 1..3 early in the history must be masked too
    es = make_eval_set([[1, 2, 3, 4, 5]], [[6]])
    falling = FnModel(10, lambda h: -torch.arange(11, dtype=torch.float32).expand(h.batch_size, -1), max_len=2)
    r = evaluate(falling, es, EvalConfig(ks=(1,), filter_seen=True))
    assert r.metrics["hr@1"] == 1.0  # 1..5 masked -> 6 is the best remaining item
    assert r.per_user["rank"][0] == 0
    r = evaluate(falling, es, EvalConfig(ks=(1,), filter_seen=False))
    assert r.metrics["hr@1"] == 0.0 and r.per_user["rank"][0] == 5
    assert r.metrics["coverage@1"] == pytest.approx(0.1)  # only item 1 is ever recommended


def test_target_in_history_is_unreachable_when_filtering() -> None:
    es = make_eval_set([[3, 4], [5, 6]], [[4], [7]])
    r = evaluate(oracle(es, 10), es, EvalConfig(ks=(5,)))
    assert r.per_user["rank"][0] == np.inf and r.per_user["rank"][1] == 0
    assert r.metrics["hr@5"] == 0.5
    assert r.metrics["repeat_share"] == 0.5
    assert r.metrics["repeat_hr@5"] == 0.0 and r.metrics["new_hr@5"] == 1.0
    kept = evaluate(oracle(es, 10), es, EvalConfig(ks=(5,), filter_seen=False))
    assert kept.metrics["hr@5"] == 1.0 and kept.metrics["repeat_hr@5"] == 1.0


def test_all_targets_are_a_distinct_set() -> None:
    # targets 2, 2, 3: |T| = 2; the model ranks 2 first and 3 tenth (item 2 and 4..11 above it)
    es = make_eval_set([[1]], [[2, 2, 3]])
    order = torch.tensor([0, 0, 100, 1, 92, 93, 94, 95, 96, 97, 98, 99], dtype=torch.float32)
    model = FnModel(11, lambda h: order.expand(h.batch_size, -1))
    r = evaluate(model, es, EvalConfig(ks=(5, 10), target="all"))
    assert r.n_targets == 2
    assert r.metrics["recall@5"] == 0.5 and r.metrics["recall@10"] == 1.0
    assert r.metrics["precision@10"] == pytest.approx(0.2)
    assert r.metrics["ndcg@10"] == pytest.approx((1 + 1 / log2(11)) / (1 + 1 / log2(3)))
    nxt = evaluate(model, es, EvalConfig(ks=(5,), target="next"))
    assert nxt.n_targets == 1 and nxt.metrics["hr@5"] == 1.0


def test_coverage_counts_distinct_recommended_items() -> None:
    n_items = 50
    es = random_eval_set(20, n_items, seed=3)
    # every user's top 5 is items 1..5 when nothing is filtered
    falling = FnModel(n_items, lambda h: -torch.arange(n_items + 1, dtype=torch.float32).expand(h.batch_size, -1))
    r = evaluate(falling, es, EvalConfig(ks=(5,), filter_seen=False))
    assert r.metrics["coverage@5"] == pytest.approx(5 / n_items)
    rand = evaluate(random_scorer(n_items), es, EvalConfig(ks=(5,), chunk_users=1))
    assert rand.metrics["coverage@5"] > 0.5


def test_sampled_metrics_are_labelled_and_optimistic() -> None:
    n_items = 300
    es = random_eval_set(200, n_items, seed=4, max_targets=3)
    model = random_scorer(n_items, seed=9)
    for target in ("next", "all"):
        for filter_seen in (True, False):
            full = evaluate(model, es, EvalConfig(ks=(10,), target=target, filter_seen=filter_seen))
            cfg = EvalConfig(ks=(10,), target=target, filter_seen=filter_seen, sampled_negatives=50, seed=1)
            sampled = evaluate(model, es, cfg)
            assert all(k.startswith("sampled_") for k in sampled.metrics)
            assert not any(k.startswith("sampled_") for k in full.metrics)
            assert "sampled_coverage@10" not in sampled.metrics
            for key in ("hr@10", "ndcg@10", "mrr", "recall@10"):
                assert sampled.metrics[f"sampled_{key}"] >= full.metrics[key]
            assert sampled.per_user["rank"].max() <= 50 or np.isinf(sampled.per_user["rank"].max())
            assert sampled.metrics["sampled_hr@10"] > 2 * full.metrics["hr@10"]
            assert "sampled ranking vs 50" in sampled.describe()
    # fixed seed -> same numbers
    again = evaluate(model, es, cfg)
    assert again.metrics == sampled.metrics


def test_sampled_negatives_avoid_history_and_targets() -> None:
    # 6 items, history {1, 2}, target 3: only 4, 5, 6 may be negatives, so rank <= 3 whatever N
    es = make_eval_set([[1, 2]], [[3]])
    falling = FnModel(6, lambda h: -torch.arange(7, dtype=torch.float32).expand(h.batch_size, -1))
    r = evaluate(falling, es, EvalConfig(ks=(1,), sampled_negatives=100, filter_seen=False))
    assert r.per_user["rank"][0] == 0  # 1 and 2 score higher but are history, never negatives


def test_chunking_does_not_change_results() -> None:
    n_items = 80
    es = random_eval_set(50, n_items, seed=5, max_targets=3)
    table = torch.rand(n_items + 1, n_items + 1, generator=torch.Generator().manual_seed(0))
    model = FnModel(n_items, lambda h: table[torch.from_numpy(h.items[:, -1])])
    for target in ("next", "all"):
        a = evaluate(model, es, EvalConfig(target=target, chunk_users=2048))
        b = evaluate(model, es, EvalConfig(target=target, chunk_users=3))
        assert a.metrics == b.metrics
        np.testing.assert_array_equal(a.per_user["rank"], b.per_user["rank"])


def test_score_memory_bound_shrinks_chunks_for_large_catalogues() -> None:
    n_items = 40_000  # 320 KB per user for scores + masked copy: 1 MB allows 3 users per chunk
    es = random_eval_set(10, n_items, seed=6, max_targets=2)
    seen_batches: list[int] = []

    def scores(h: Histories) -> torch.Tensor:
        seen_batches.append(h.batch_size)
        return torch.from_numpy(h.items[:, -1:] % 97).float() * torch.arange(n_items + 1).float().remainder(13)

    model = FnModel(n_items, scores)
    bounded = evaluate(model, es, EvalConfig(max_score_mb=1))
    assert max(seen_batches) == 3
    seen_batches.clear()
    free = evaluate(model, es, EvalConfig())
    assert seen_batches == [10]
    assert bounded.metrics.keys() == free.metrics.keys()
    np.testing.assert_array_equal(list(bounded.metrics.values()), list(free.metrics.values()))  # NaN == NaN here


def test_model_state_is_not_modified_by_masking() -> None:
    state = torch.arange(11, dtype=torch.float32)
    model = FnModel(10, lambda h: state.expand(h.batch_size, -1))  # a view of the model's state
    evaluate(model, make_eval_set([[10, 9]], [[8]]), EvalConfig(ks=(1,)))
    torch.testing.assert_close(state, torch.arange(11, dtype=torch.float32))


def test_result_describe_per_user_and_config_checks() -> None:
    es = random_eval_set(30, 40, seed=6)
    r = evaluate(random_scorer(40), es, EvalConfig(ks=(20, 10, 10)))
    assert r.config.ks == (10, 20) and r.filter_seen is True and r.n_users == 30
    text = r.describe()
    assert "ndcg@10" in text and "30 users" in text and "seen items filtered" in text and "full ranking" in text
    assert "seen items kept" in evaluate(random_scorer(40), es, EvalConfig(filter_seen=False)).describe()
    for key in ("user", "rank", "ndcg@10", "hr@20", "repeat_share"):
        assert len(r.per_user[key]) == 30
    assert {"coverage@10", "f1@20", "precision@10", "mrr@10", "repeat_share", "new_ndcg@10"} <= set(r.metrics)
    assert all(0.0 <= v <= 1.0 for v in r.metrics.values() if not math.isnan(v))
    assert r.to_dict()["config"]["filter_seen"] is True
    with pytest.raises(ValueError):
        EvalConfig(ks=())
    with pytest.raises(ValueError):
        EvalConfig(sampled_negatives=0)
    with pytest.raises(ValueError):  # wrong score shape is reported, not broadcast
        evaluate(FnModel(40, lambda h: torch.zeros(h.batch_size, 5)), es)


def test_top_only_ranks_give_the_same_metrics_at_every_cutoff() -> None:
    """Validation skips the full rank count: on scores full of ties (7 levels over 40 items, so the
    k-th value is often tied) every metric at k must equal the exact one; uncut MRR is not reported."""
    n_items = 40
    eval_set = random_eval_set(300, n_items, seed=3)
    item = torch.arange(n_items + 1)

    def fn(h: Histories) -> torch.Tensor:
        rows = torch.from_numpy(h.timestamps[:, -1])
        return ((rows[:, None] * 31 + item[None, :] * 17) % 7).float()

    model = FnModel(n_items, fn)
    for filter_seen in (True, False):
        config = EvalConfig(ks=(1, 5, 10), filter_seen=filter_seen, chunk_users=64)
        exact = evaluate(model, eval_set, config).metrics
        top = evaluate(model, eval_set, config.model_copy(update={"exact_ranks": False})).metrics
        assert "mrr" in exact and "mrr" not in top
        assert set(top) == set(exact) - {"mrr"}
        for key, value in top.items():
            assert value == pytest.approx(exact[key], abs=1e-12), key
        assert 0 < top["ndcg@10"] < 1


@pytest.mark.parametrize("width", [100, 4096, 12_102, 40_000])
def test_two_stage_top_k_equals_torch_topk(width: int) -> None:
    from shopseq.evaluation.metrics import top_k

    g = torch.Generator().manual_seed(width)
    scores = torch.randn(64, width, generator=g)
    scores[:, 0] = -torch.inf
    scores[:8] = torch.randint(0, 5, (8, width), generator=g).float()  # ties everywhere
    scores[8, :] = -torch.inf  # a fully masked row
    scores[9, :-3] = -torch.inf  # only the tail columns are finite
    scores[10, width - 1] = 100.0  # the best item is the last column
    for k in (1, 10, 20):
        values, indices = top_k(scores, k)
        expected = torch.topk(scores, k, dim=1).values
        assert torch.equal(values, expected)
        assert torch.equal(scores.gather(1, indices), values)  # indices point at those values
        assert all(len(set(row)) == k for row in indices.tolist())  # no item twice in a row
    assert top_k(scores, 20)[1][10, 0] == width - 1


@pytest.mark.parametrize("target", ["next", "all"])
def test_repeat_share_marks_targets_found_in_the_history(target: str) -> None:
    rng = np.random.default_rng(5)
    histories = [rng.integers(1, 12, int(n)).tolist() for n in rng.integers(0, 8, 60)]
    targets = [rng.integers(1, 12, int(n)).tolist() for n in rng.integers(1, 4, 60)]
    es = make_eval_set(histories, targets)
    r = evaluate(oracle(es, 12), es, EvalConfig(ks=(5,), target=target, filter_seen=False))
    firsts = [[t[0]] for t in targets] if target == "next" else [sorted(set(t)) for t in targets]
    expected = [np.mean([i in h for i in ts]) for h, ts in zip(histories, firsts, strict=True)]
    np.testing.assert_allclose(r.per_user["repeat_share"], expected)
