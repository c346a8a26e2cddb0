"""The neural models: no leakage from the future, BERT4Rec's masking, input alignment, persistence,
the shared contract, and that each one learns a planted sequential pattern better than popularity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import chain_sequences, seqs_from_lists

from shopseq.data.sequences import Sequences
from shopseq.models import registry
from shopseq.models.base import Histories
from shopseq.models.bert4rec import BERT4Rec, BERT4RecConfig
from shopseq.models.gru4rec import GRU4Rec, GRU4RecConfig
from shopseq.models.neural import NeuralRecommender, left_align
from shopseq.models.sasrec import SASRec, SASRecConfig
from shopseq.training import LengthBatcher, TrainConfig

# one thread: tiny models gain nothing from more, and it keeps the tests quick on a busy machine
FAST = {"epochs": 1, "batch_size": 64, "lr": 5e-3, "warmup_steps": 0, "quiet": True, "threads": 1}
ARCH = {"hidden": 16, "max_len": 12, "dropout": 0.1}


def build(name: str, n_items: int, arch: dict | None = None, **train: object) -> NeuralRecommender:
    arch = {**ARCH, **(arch or {})}
    tc = TrainConfig(**{**FAST, **train})
    if name == "sasrec":
        return SASRec(SASRecConfig(layers=1, heads=2, train=tc, **arch), n_items)
    if name == "bert4rec":
        return BERT4Rec(BERT4RecConfig(layers=1, heads=2, train=tc, **arch), n_items)
    return GRU4Rec(GRU4RecConfig(train=tc, **arch), n_items)


NAMES = ["sasrec", "bert4rec", "gru4rec"]


def test_registered_with_defaults() -> None:
    for name in NAMES:
        assert name in registry.model_names()
        config = registry.default_config(name)
        assert config.model == name and config.hidden == 64 and config.max_len == 50
    c = registry.default_config("sasrec")
    assert (c.layers, c.heads, c.norm_first, c.dropout, c.train.loss) == (2, 2, False, 0.5, "ce")


# ------------------------------------------------------------------------------------------ alignment
def test_left_align_keeps_the_last_events() -> None:
    h = Histories.from_lists([[1, 2, 3, 4, 5], [7], []], max_len=5)
    items, lengths = left_align(h.items, h.lengths, max_len=3)
    assert items.tolist() == [[3, 4, 5], [7, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]


@pytest.mark.parametrize("name", NAMES)
def test_scores_ignore_padding_width_and_old_events(name: str) -> None:
    model = build(name, 20)
    a = model.score(Histories.from_lists([[1, 2, 3], [4]], max_len=12))
    wide = Histories.from_lists([[1, 2, 3], [4], list(range(1, 13))], max_len=12)  # wider padding
    b = model.score(wide)[:2]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert a.dtype == torch.float32 and a.shape == (2, 21)
    # only the last max_len events count
    long_ = model.score(Histories.from_lists([[9, 9, 9, *range(1, 13)]], max_len=100))
    short = model.score(Histories.from_lists([list(range(1, 13))], max_len=100))
    torch.testing.assert_close(long_, short, atol=1e-5, rtol=0)
    assert model.encode(Histories.from_lists([[1, 2]], 12)).shape == (1, 16)


@pytest.mark.parametrize("name", NAMES)
def test_scoring_in_length_groups_keeps_each_users_scores_and_order(name: str, monkeypatch) -> None:
    from shopseq.models import neural

    model = build(name, 30)
    rng = np.random.default_rng(0)
    lists = [rng.integers(1, 31, int(n)).tolist() for n in rng.integers(0, 16, 40)]
    histories = Histories.from_lists(lists, max_len=12)
    whole = model.score(histories)  # 40 rows <= LENGTH_GROUP: one padded batch
    monkeypatch.setattr(neural, "LENGTH_GROUP", 3)  # 14 groups of similar lengths, each trimmed
    grouped = model.score(histories)
    torch.testing.assert_close(grouped, whole, atol=1e-5, rtol=0)
    single = model.score(Histories.from_lists([lists[7]], max_len=12))
    torch.testing.assert_close(grouped[7:8], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_scores_follow_the_weights_after_training_and_loading(name: str) -> None:
    """Scores come from the current weights (the fused optimiser bypasses version counters, so a
    cache keyed on them would serve stale ones); 70 rows take the contiguous-copy path."""
    model = build(name, 30)
    histories = Histories.from_lists([[1 + i % 30, 2, 3][: 1 + i % 3] for i in range(70)], max_len=12)

    def direct() -> torch.Tensor:  # the product without the cache
        with torch.no_grad():
            return (model._user_vectors(histories) @ model.module.output_weight().t()).float()

    before = model.score(histories)
    torch.testing.assert_close(before, direct(), atol=1e-5, rtol=0)
    state = model.state()
    model.fit(chain_sequences(n_users=40, n_items=30))  # optimiser steps change weights in place
    after = model.score(histories)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, direct(), atol=1e-5, rtol=0)
    model.load_state(state)
    torch.testing.assert_close(model.score(histories), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_sasrec_last_position_scoring_equals_the_full_window(norm_first: bool) -> None:
    """Scoring runs the final block at each row's last event only; it must give the state that
    the full causal pass gives there (empty, short and full rows; pre- and post-LN)."""
    from shopseq.models.neural import last_states

    model = SASRec(SASRecConfig(layers=2, heads=2, norm_first=norm_first, train=TrainConfig(**FAST), **ARCH), 30)
    module = model.module.eval()
    rng = np.random.default_rng(1)
    histories = Histories.from_lists([rng.integers(1, 31, n).tolist() for n in (0, 1, 3, 12, 7, 12)], max_len=12)
    batch = model._batch(histories)
    with torch.no_grad():
        full = last_states(module.hidden_states(batch.items, batch.lengths), batch.lengths)
        fast = module.batch_user_vectors(batch)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- leakage
@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_prediction_at_t_ignores_items_after_t(name: str) -> None:
    model = build(name, 30)
    module = model.module.eval()
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, 31, (4, 10), generator=g)
    changed = items.clone()
    changed[:, 6:] = torch.randint(1, 31, (4, 4), generator=g)
    changed[1, 6:] = 0  # also: turning the future into padding changes nothing before it
    with torch.no_grad():
        a, b = module.hidden_states(items), module.hidden_states(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    # the training pairs of a window: position t's target is the item at t + 1
    batch = LengthBatcher(np.array([0, 5]), np.array([3, 4, 5, 6, 7]), 13, 1).make(np.array([0]))
    _, targets = module.training_pairs(batch)
    assert targets.tolist() == [4, 5, 6, 7]


# -------------------------------------------------------------------------------------------- BERT4Rec
def test_bert4rec_masks_and_predicts_the_masked_items() -> None:
    torch.manual_seed(0)
    model = build("bert4rec", 50, arch={"max_len": 20, "mask_prob": 0.3})
    module = model.module.train()
    assert module.mask_id == 51 and module.item_emb.num_embeddings == 52
    assert module.output_weight().shape[0] == 51  # [MASK] is never a recommendation
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 21, size=400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(1, 51, size=offsets[-1])
    batch = LengthBatcher(offsets, items, 20, 400).make(np.arange(400))
    seen: dict[str, torch.Tensor] = {}
    original = module.hidden_states
    module.hidden_states = lambda x, extra=None: (seen.setdefault("input", x), original(x, extra))[1]  # type: ignore[method-assign]
    h, targets = module.training_pairs(batch)
    module.hidden_states = original  # type: ignore[method-assign]
    masked = seen["input"] == module.mask_id
    assert h.shape == (int(masked.sum()), 16)
    assert torch.equal(targets, batch.items[masked])  # targets are the hidden originals
    assert not (masked & (batch.items == 0)).any(), "padding is never masked"
    assert masked.any(1).all(), "every window predicts something"
    assert torch.equal(seen["input"][~masked], batch.items[~masked])
    share = float(masked.sum() / (batch.items != 0).sum())
    assert 0.2 < share < 0.4
    expected = module.mean_targets(lengths)
    assert abs(expected - float(masked.sum()) / 400) < 0.5
    # inference: [MASK] goes right after the (truncated) history
    module.eval()
    inp, lens = left_align(*[np.array(x) for x in ([[0, 0, 5, 6], [1, 2, 3, 4]], [2, 4])], max_len=20)
    with torch.no_grad():
        v = module.user_vectors(inp, lens)
        direct = module.hidden_states(torch.tensor([[5, 6, 51, 0, 0], [1, 2, 3, 4, 51]]))
    torch.testing.assert_close(v, direct[[0, 1], [2, 4]], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- persistence
def _load_model(directory: Path, monkeypatch: pytest.MonkeyPatch) -> NeuralRecommender:
    # other model modules may be missing in a partial checkout: import only those that exist
    present = tuple(m for m in registry._MODEL_MODULES if importlib.util.find_spec(m) is not None)
    monkeypatch.setattr(registry, "_MODEL_MODULES", present)
    return registry.load_model(directory)  # type: ignore[return-value]


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_scores(name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = chain_sequences(60, 20)
    model = build(name, 20).fit(seqs)
    model.save(tmp_path / name)
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["config.json", "model.safetensors"]
    loaded = _load_model(tmp_path / name, monkeypatch)
    assert type(loaded) is type(model) and loaded.config == model.config
    h = Histories.from_sequences(seqs, 12)
    assert torch.equal(loaded.score(h), model.score(h))
    np.testing.assert_array_equal(loaded.encode(h), model.encode(h))


# ------------------------------------------------------------------------------------------------ learning
def _split_last(seqs: Sequences) -> tuple[Sequences, Histories, np.ndarray]:
    """Train on all but each user's last event; test on predicting it."""
    lengths = seqs.lengths()
    last = np.zeros(seqs.n_events, dtype=bool)
    last[seqs.offsets[1:] - 1] = True
    train = seqs.subset(~last)
    return train, Histories.from_sequences(train, 50), seqs.items[last].astype(np.int64)[lengths > 0]


def _hr_at_10(scores: torch.Tensor, targets: np.ndarray) -> float:
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    top = torch.topk(scores, 10, dim=1).indices.numpy()
    return float((top == targets[:, None]).any(1).mean())


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_sequential_pattern_better_than_popularity(name: str) -> None:
    seqs = chain_sequences(400, 40, seed=1)
    train, hist, targets = _split_last(seqs)
    counts = np.bincount(train.items, minlength=41).astype(np.float32)  # most-popular baseline
    pop_hr = _hr_at_10(torch.from_numpy(np.tile(counts, (len(targets), 1))), targets)
    epochs = {"sasrec": 15, "bert4rec": 30, "gru4rec": 15}[name]
    model = build(name, 40, arch={"dropout": 0.1, "hidden": 32}, epochs=epochs, batch_size=32, lr=1e-2)
    model.fit(train)
    hr = _hr_at_10(model.score(hist), targets)
    assert hr > pop_hr + 0.3, f"{name}: HR@10 {hr:.3f} vs popularity {pop_hr:.3f}"


def test_sasrec_cosine_scoring_learns_and_scores_cosines_over_the_temperature() -> None:
    seqs = chain_sequences(400, 40, seed=1)
    train, hist, targets = _split_last(seqs)
    counts = np.bincount(train.items, minlength=41).astype(np.float32)
    pop_hr = _hr_at_10(torch.from_numpy(np.tile(counts, (len(targets), 1))), targets)
    model = SASRec(SASRecConfig(layers=1, heads=2, hidden=32, max_len=12, dropout=0.1, temperature=0.1,
                                train=TrainConfig(**{**FAST, "epochs": 15, "batch_size": 32, "lr": 1e-2})), 40)
    model.fit(train)
    scores = model.score(hist)
    assert _hr_at_10(scores, targets) > pop_hr + 0.3
    assert float(scores[:, 1:].abs().max()) <= 1 / 0.1 + 1e-4  # cosines over the temperature
    vectors = torch.from_numpy(model.encode(hist))
    torch.testing.assert_close(vectors.norm(dim=1), torch.full((len(vectors),), 10.0), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, tmp_path: Path) -> None:
    contract = pytest.importorskip("contract")
    split = contract.shop_split()
    contract.check_recommender_contract(lambda: build(name, split.train.n_items, epochs=1), split.train, split.test,
                                        tmp_path=tmp_path, atol=1e-5)


def test_fit_with_a_validation_set_uses_the_evaluator() -> None:
    pytest.importorskip("shopseq.evaluation")
    from shopseq.data.splits import LeaveOneOutSplit

    split = LeaveOneOutSplit().split(chain_sequences(150, 20))
    model = build("sasrec", 20, epochs=2).fit(split.train, split.valid)
    assert all("valid_ndcg@10" in row for row in model.history)


def test_rejects_items_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="items go up to"):
        build("gru4rec", 5).fit(seqs_from_lists([[1, 2, 9]], 9))
