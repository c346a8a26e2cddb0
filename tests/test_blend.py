"""models.blend: the model contract, mixing in probability space, weights chosen on validation,
and a mixture that beats both of its members on data with two patterns."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
from contract import check_recommender_contract, shop_split
from pydantic import ValidationError
from test_baselines import seqs_from_lists

from shopseq.data.splits import LeaveOneOutSplit
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models.base import Histories
from shopseq.models.baselines import CartFirst, CartFirstConfig, Markov, MarkovConfig, Repeat, RepeatConfig
from shopseq.models.blend import Blend, BlendConfig, probabilities
from shopseq.models.registry import build_model
from shopseq.models.sasrec import SASRec, SASRecConfig
from shopseq.training import TrainConfig


def two_pattern_sequences(n_users: int = 1500, n_items: int = 200, seed: int = 0):
    """40% of the steps go to the next item id (a chain: Markov's pattern), 30% back to an item
    clicked 2-8 steps earlier (a repeat: Repeat's pattern), 30% to a random item, so that what a
    repeat returns to is not a function of the last item, and Markov cannot learn it."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        seq = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(10, 20))):
            u = rng.random()
            if u < 0.4 or len(seq) < 3:
                seq.append(seq[-1] % n_items + 1)
            elif u < 0.7:
                seq.append(seq[-int(rng.integers(2, min(8, len(seq)) + 1))])
            else:
                seq.append(int(rng.integers(1, n_items + 1)))
        users.append(seq)
    return seqs_from_lists(users, n_items)


def test_contract_with_fixed_weights(tmp_path: Path) -> None:
    split = shop_split()
    config = BlendConfig(members=[{"model": "markov"}, {"model": "itemknn"}], weights=[3, 1])
    model = check_recommender_contract(lambda: build_model(config, split.train.n_items), split.train, split.test,
                                       tmp_path=tmp_path, atol=1e-6)
    assert model.weights == [0.75, 0.25]


def test_probabilities_sum_to_one_for_logits_and_for_counts() -> None:
    split = shop_split()
    h = Histories.from_eval_set(split.test, 20, np.arange(16))
    markov = Markov(MarkovConfig(), split.train.n_items).fit(split.train)
    sasrec = SASRec(SASRecConfig(hidden=16, layers=1, max_len=20, train=TrainConfig(epochs=1, quiet=True)),
                    split.train.n_items)  # untrained logits are logits all the same
    for model in (markov, sasrec):
        p = probabilities(model, h)
        assert (p[:, 0] == 0).all() and (p >= 0).all()
        torch.testing.assert_close(p.sum(dim=1), torch.ones(len(p)), atol=1e-5, rtol=0)
    # the mixture's log-probabilities are exactly the weighted sum of the members' distributions
    blend = Blend.from_members([markov, sasrec], BlendConfig(members=[markov.config, sasrec.config], weights=[1, 1]))
    expected = 0.5 * probabilities(markov, h) + 0.5 * probabilities(sasrec, h)
    torch.testing.assert_close(blend.score(h)[:, 1:].exp(), expected[:, 1:], atol=1e-6, rtol=1e-4)


def test_tuned_mixture_beats_both_members_on_two_patterns() -> None:
    split = LeaveOneOutSplit().split(two_pattern_sequences())
    config = BlendConfig(members=[{"model": "markov"}, {"model": "repeat"}], monitor="hr@5")
    blend = Blend(config, split.train.n_items).fit(split.train, split.valid)
    assert [r["weights"][1] for r in blend.tuning] == pytest.approx([i / 10 for i in range(11)])
    assert 0.0 < blend.weights[1] < 1.0  # neither member alone was best
    ec = EvalConfig(ks=(5,), filter_seen=False)
    hr = {name: evaluate(model, split.test, ec).metrics["hr@5"]
          for name, model in (("markov", blend.members[0]), ("repeat", blend.members[1]), ("blend", blend))}
    assert hr["blend"] > max(hr["markov"], hr["repeat"]) + 0.1, hr
    # the grid's ends are the members themselves: the chosen point is at least as good as either
    by_weight = {r["weights"][1]: r["hr@5"] for r in blend.tuning}
    assert max(by_weight.values()) == by_weight[blend.weights[1]]
    assert by_weight[blend.weights[1]] >= max(by_weight[0.0], by_weight[1.0])


def test_three_members_are_tuned_on_a_simplex_grid_from_cached_scores() -> None:
    split = LeaveOneOutSplit().split(two_pattern_sequences(n_users=600))
    config = BlendConfig(members=[{"model": "markov"}, {"model": "repeat"}, {"model": "pop"}], monitor="hr@5",
                         grid_step=0.25)
    blend = Blend(config, split.train.n_items).fit(split.train, split.valid)
    with patch.object(Markov, "score", autospec=True, side_effect=Markov.score) as markov_scored:
        blend.choose_weights(split.valid)
    n_chunks = -(-split.valid.n_users // EvalConfig().chunk_users)
    assert markov_scored.call_count == n_chunks  # once per validation chunk, not once per grid point
    points = [r["weights"] for r in blend.tuning]
    assert len(points) == 15 and all(sum(p) == pytest.approx(1) for p in points)  # C(4 + 2, 2) vectors
    assert [1.0, 0.0, 0.0] in points and [0.0, 0.0, 1.0] in points
    best = max(r["hr@5"] for r in blend.tuning)
    assert blend.weights in points and next(r for r in blend.tuning if r["weights"] == blend.weights)["hr@5"] == best
    # the scores cached while tuning are the members' own: the chosen point re-scored from scratch agrees
    ec = EvalConfig(ks=(5,), filter_seen=False, exact_ranks=False)
    assert evaluate(blend, split.valid, ec).metrics["hr@5"] == pytest.approx(best, abs=1e-5)
    # and with the cache switched off, tuning reaches the same weights
    uncached = Blend.from_members(blend.members, config.model_copy(update={"tuning_cache_mb": 0}))
    assert uncached.choose_weights(split.valid) == blend.weights
    assert uncached.tuning == blend.tuning


def test_members_already_trained_and_a_neural_member_that_early_stops() -> None:
    split = LeaveOneOutSplit().split(two_pattern_sequences(n_users=400))
    n = split.train.n_items
    sasrec = SASRec(SASRecConfig(hidden=16, layers=1, max_len=20,
                                 train=TrainConfig(epochs=2, quiet=True, threads=1, monitor="hr@10")), n)
    config = BlendConfig(members=[sasrec.config, RepeatConfig()], monitor="hr@10")
    blend = Blend(config, n)
    blend.members[0] = sasrec
    blend.fit(split.train, split.valid)
    assert [r["epoch"] for r in sasrec.history] == [1, 2]
    assert "valid_hr@10" in sasrec.history[-1]  # validated under the blend's protocol
    reused = Blend.from_members([sasrec, Repeat(RepeatConfig(), n).fit(split.train)], BlendConfig(
        members=config.members, monitor="hr@10"))
    assert reused.choose_weights(split.valid) == blend.weights


def test_bad_configs_are_refused_with_reasons() -> None:
    with pytest.raises(ValidationError, match="coarser grid_step"):
        BlendConfig(members=[{"model": "pop"}, {"model": "markov"}, {"model": "repeat"}, {"model": "itemknn"}],
                     grid_step=0.05)
    with pytest.raises(ValidationError, match="must divide 1"):
        BlendConfig(members=[{"model": "pop"}, {"model": "markov"}], grid_step=0.3)
    with pytest.raises(ValidationError, match="non-negative"):
        BlendConfig(members=[{"model": "pop"}, {"model": "markov"}], weights=[1.0])
    with pytest.raises(ValidationError, match="member of a blend"):
        BlendConfig(members=[{"model": "pop"}, {"model": "blend", "members": [{"model": "pop"}, {"model": "markov"}],
                                                "weights": [1, 1]}], weights=[1, 1])
    with pytest.raises(ValidationError, match="at least 2"):
        BlendConfig(members=[{"model": "pop"}])
    with pytest.raises(ValidationError, match="a member must be a model config"):
        BlendConfig(members=["pop", {"model": "markov"}])
    with pytest.raises(ValueError, match="unknown model"):
        BlendConfig(members=[{"model": "pop"}, {"model": "nope"}])
    train = shop_split().train
    with pytest.raises(ValueError, match="validation data"):
        Blend(BlendConfig(members=[{"model": "pop"}, {"model": "markov"}]), train.n_items).fit(train)


def test_purchase_scores_mix_the_members_purchase_heads() -> None:
    from shopseq.models.features import AuxHeads, EventFeatures

    split = shop_split()
    n = split.train.n_items
    h = Histories.from_eval_set(split.test, 20, np.arange(16))
    sasrec = SASRec(SASRecConfig(hidden=16, layers=1, max_len=20, features=EventFeatures(event_types=True),
                                 aux=AuxHeads(next_purchase=0.5), train=TrainConfig(epochs=1, quiet=True)), n)
    rule = CartFirst(CartFirstConfig(), n).fit(split.train)
    blend = Blend.from_members([sasrec, rule], BlendConfig(members=[sasrec.config, rule.config], weights=[1, 3],
                                                           head="purchase"))
    assert blend.has_purchase_head and not rule.has_purchase_head
    expected = 0.25 * probabilities(sasrec, h, "purchase") + 0.75 * probabilities(rule, h, "purchase")
    torch.testing.assert_close(blend.score_purchase(h)[:, 1:].exp(), expected[:, 1:], atol=1e-6, rtol=1e-4)
    # the purchase head is not the next-item head, so the two mixtures differ
    assert not torch.allclose(blend.score_purchase(h), blend.score(h))


def test_a_blend_runs_as_an_experiment_under_the_runs_protocol(tmp_path: Path) -> None:
    from contract import shop_sequences

    from shopseq.runs.experiment import ExperimentConfig, SplitConfig, load_run, run_experiment

    spec = {"model": "blend", "members": [{"model": "markov"}, {"model": "repeat"}], "monitor": "ndcg@10"}
    config = ExperimentConfig(model=spec, split=SplitConfig(method="loo"), baselines=["markov"])
    result = run_experiment(shop_sequences(), config, tmp_path / "run", log=lambda *_: None)
    loaded, _ = load_run(tmp_path / "run")
    assert isinstance(loaded, Blend) and loaded.config.filter_seen  # the run filters seen items: so did tuning
    assert [m.name for m in loaded.members] == ["markov", "repeat"] and sum(loaded.weights) == pytest.approx(1)
    assert 0 < result.test["ndcg@10"] <= 1 and "markov" in result.baselines
