"""Multi-behaviour SASRec: event-type / time / attribute inputs and the next-type and
next-purchase heads — feature arithmetic, the contract with everything on, and learning tests on
data where the extra signal really decides the answer."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch
from contract import check_recommender_contract, shop_split

from shopseq.data.attributes import ItemAttributes, item_attributes
from shopseq.data.schema import EventType
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.data.vocab import Vocabulary
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.evaluation.next_type import evaluate_next_type, markov_type_predictions, type_metrics
from shopseq.models.base import Histories
from shopseq.models.bert4rec import BERT4Rec, BERT4RecConfig
from shopseq.models.features import EventFeatures, gap_buckets, hour_of_week, with_attributes
from shopseq.models.gru4rec import GRU4Rec, GRU4RecConfig
from shopseq.models.registry import load_model
from shopseq.models.sasrec import SASRec, SASRecConfig, next_purchase_targets
from shopseq.training import TrainConfig
from shopseq.training.batching import Batch

FAST = {"batch_size": 64, "lr": 5e-3, "warmup_steps": 0, "quiet": True, "threads": 1}
VIEW, CART, PURCHASE = int(EventType.VIEW), int(EventType.CART), int(EventType.PURCHASE)


def sasrec(n_items: int, epochs: int = 1, **arch: object) -> SASRec:
    arch = {"hidden": 32, "max_len": 12, "dropout": 0.1, "layers": 1, "heads": 2, **arch}
    config = SASRecConfig(train=TrainConfig(epochs=epochs, **FAST), **arch)
    return SASRec(config, n_items)


def gru4rec(n_items: int, epochs: int = 1, **arch: object) -> GRU4Rec:
    arch = {"hidden": 32, "max_len": 12, "dropout": 0.1, **arch}
    return GRU4Rec(GRU4RecConfig(train=TrainConfig(epochs=epochs, **FAST), **arch), n_items)


def bert4rec(n_items: int, epochs: int = 1, **arch: object) -> BERT4Rec:
    arch = {"hidden": 32, "max_len": 12, "dropout": 0.1, "layers": 1, "heads": 2, **arch}
    return BERT4Rec(BERT4RecConfig(train=TrainConfig(epochs=epochs, **FAST), **arch), n_items)


def make_sequences(items: np.ndarray, types: np.ndarray, n_items: int) -> Sequences:
    """Equal-length users (rows of the (U, L) arrays), one event per minute."""
    n_users, length = items.shape
    stamps = (np.arange(n_users * length, dtype=np.int64) * 60_000).reshape(n_users, length)
    return Sequences(
        offsets=np.arange(n_users + 1, dtype=np.int64) * length,
        items=items.ravel().astype(np.int32), event_types=types.ravel().astype(np.int8),
        timestamps=stamps.ravel(),
        user_vocab=Vocabulary([f"u{u}" for u in range(n_users)], "user"),
        item_vocab=Vocabulary([f"i{i}" for i in range(1, n_items + 1)], "item"),
    )


def last_event_split(seqs: Sequences) -> tuple[Sequences, Histories, np.ndarray, np.ndarray]:
    last = np.zeros(seqs.n_events, dtype=bool)
    last[seqs.offsets[1:] - 1] = True
    train = seqs.subset(~last)
    return train, Histories.from_sequences(train, 50), seqs.items[last].astype(np.int64), seqs.event_types[last]


def hit_rate(scores: torch.Tensor, targets: np.ndarray, k: int) -> float:
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    return float((torch.topk(scores, k, dim=1).indices.numpy() == targets[:, None]).any(1).mean())


# ----------------------------------------------------------------------------------------- feature maths
def test_gap_buckets_are_log2_seconds_and_zero_on_padding() -> None:
    ts = torch.tensor([[0, 500, 1_500, 4_500, 0], [10_000, 10_000, 0, 0, 0]])
    buckets = gap_buckets(ts, torch.tensor([4, 2]))
    # gaps 0.5 s -> 1, 1 s -> 2 (log2(2) = 1, +1), 3 s -> 3 (log2(4) = 2, +1); first event 0
    assert buckets.tolist() == [[0, 1, 2, 3, 0], [0, 1, 0, 0, 0]]


def test_hour_of_week_starts_on_monday_utc() -> None:
    monday_9 = 1_732_525_200_000  # 2024-11-25 09:00 UTC, a Monday
    sunday_23 = monday_9 - 10 * 3_600_000
    hours = hour_of_week(torch.tensor([[monday_9, sunday_23]]), torch.tensor([2]))
    assert hours.tolist() == [[10, 168]]


def test_next_purchase_targets_skip_views() -> None:
    items = torch.tensor([[5, 6, 7, 8, 9, 0]])
    types = torch.tensor([[VIEW, PURCHASE, VIEW, VIEW, PURCHASE, 0]])
    # input position t -> item of the first purchase after t
    assert next_purchase_targets(items, types).tolist() == [[6, 9, 9, 9, 0]]


def test_seen_offsets_mark_each_item_once_at_its_last_sighting() -> None:
    from shopseq.models.pointer import SeenOffset, recency_bucket

    offset = SeenOffset()
    with torch.no_grad():
        offset.gap_w.copy_(torch.arange(16, dtype=torch.float32))
    items = torch.tensor([[5, 7, 5, 9, 0, 0], [3, 3, 3, 3, 3, 4]])
    cols, vals = offset.offsets(items)
    # row 0, query at position 3: 7 (2 ago), 5 (last seen 1 ago, its first sighting dropped), 9 (now)
    assert cols[0, 3].tolist() == [0, 7, 5, 9, 0, 0]
    assert (vals[0, 3] / 10).tolist() == [0, 2, 1, 0, 0, 0]
    assert cols[0, 1].tolist() == [5, 7, 0, 0, 0, 0]  # nothing after the query
    assert cols[1, 5].tolist() == [0, 0, 0, 0, 3, 4]
    at = torch.tensor([3, 5])
    cols_at, vals_at = offset.offsets(items, at=at)
    assert torch.equal(cols_at, cols[torch.arange(2), at]) and torch.equal(vals_at, vals[torch.arange(2), at])
    assert recency_bucket(torch.tensor([0, 7, 8, 15, 16, 1023, 5000])).tolist() == [0, 7, 8, 8, 9, 14, 15]


@pytest.mark.parametrize("with_where", [False, True])
def test_next_sighting_by_sorting_matches_the_pairwise_definition(with_where: bool) -> None:
    from shopseq.models.pointer import next_sighting

    gen = torch.Generator().manual_seed(0)
    items = torch.randint(0, 6, (64, 17), generator=gen)  # few items: many repeats, padding 0 too
    where = torch.rand(64, 17, generator=gen) < 0.4 if with_where else None
    pos = torch.arange(17)
    same = (items[:, :, None] == items[:, None, :]) & (pos[None, :] > pos[:, None])
    if where is not None:
        same &= where[:, None, :]
    want = torch.where(same, pos, 17).amin(dim=2)
    assert torch.equal(next_sighting(items, where), want)
    assert next_sighting(torch.tensor([[4, 2, 4, 4, 2]])).tolist() == [[2, 4, 3, 5, 5]]


def test_type_metrics_accuracy_and_macro_f1() -> None:
    scores = type_metrics(np.array([0, 0, 3, 3]), np.array([0, 3, 3, 3]))
    assert scores.accuracy == pytest.approx(0.75)
    # class 0: P 1/2 R 1 -> F1 2/3; class 3: P 1 R 2/3 -> F1 0.8
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_purchase_eval_set_keeps_only_purchase_targets() -> None:
    split = shop_split()
    purchases = split.test.with_target_types((PURCHASE,))
    assert 0 < purchases.n_users < split.test.n_users
    assert (purchases.target_types == PURCHASE).all()
    kept = np.isin(split.test.users, purchases.users)
    assert purchases.n_history_events == int(split.test.history_lengths()[kept].sum())


# ----------------------------------------------------------------------------------------- attributes
def test_item_attributes_from_the_items_table_and_event_categories() -> None:
    con = duckdb.connect()
    con.register("items", pa.table({
        "item_id": ["a", "b", "c"], "category_path": [["Home", "Kitchen"], ["Home", "Bath"], None],
        "brand": ["acme", "acme", None], "attributes": [None, None, None]}))
    con.register("events", pa.table({"item_id": ["d", "d", "e", "c"], "category": ["7", "7", "7", "9"]}))
    vocab = Vocabulary(["a", "b", "c", "d", "e", "f"], "item")
    attrs = item_attributes(con, vocab)
    names = {i: {attrs.tokens[t - 1] for t in attrs.matrix[i] if t} for i in range(1, 7)}
    # tokens on one item only (cat2 levels, c's category 9) carry nothing shared and are dropped
    assert names[1] == names[2] == {"cat1:Home", "brand:acme"}
    assert names[4] == names[5] == {"cat:7"}
    assert names[3] == names[6] == set()
    assert attrs.coverage() == pytest.approx(4 / 6)


# ----------------------------------------------------------------------------------------- contract
def test_contract_with_every_feature_and_head(tmp_path: Path) -> None:
    split = shop_split()
    n = split.train.n_items
    rng = np.random.default_rng(0)
    attrs = ItemAttributes(rng.integers(0, 6, size=(n + 1, 3)).astype(np.int32), [f"t{i}" for i in range(5)])
    attrs.matrix[0] = 0
    features = EventFeatures(event_types=True, time_gaps=True, hour_of_week=True)

    def factory() -> SASRec:
        config = SASRecConfig(hidden=16, max_len=12, dropout=0.1, layers=1, heads=2, features=features,
                              aux={"next_type": 0.5, "next_purchase": 0.5},
                              train=TrainConfig(epochs=1, **FAST))
        model = SASRec(with_attributes(config, attrs), n)
        model.set_item_attributes(attrs)
        return model

    model = check_recommender_contract(factory, split.train, split.test, tmp_path=tmp_path, atol=1e-5)
    h = Histories.from_eval_set(split.test, model.max_len, np.arange(8))
    probs = model.next_type_probabilities(h)
    assert probs is not None and probs.shape == (8, len(EventType))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    scores = model.score_purchase(h)
    assert tuple(scores.shape) == (8, n + 1) and torch.isfinite(scores[:, 1:]).all()
    again = load_model(model.save(tmp_path / "again"))  # the pointer's weights travel with the run
    torch.testing.assert_close(again.score_purchase(h), scores)


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec"])
def test_other_models_keep_the_contract_with_every_feature(name: str, tmp_path: Path) -> None:
    split = shop_split()
    n = split.train.n_items
    attrs = ItemAttributes(np.random.default_rng(1).integers(0, 6, size=(n + 1, 3)).astype(np.int32),
                           [f"t{i}" for i in range(5)])
    attrs.matrix[0] = 0
    features = EventFeatures(event_types=True, time_gaps=True, hour_of_week=True)
    arch = {"hidden": 16, "max_len": 12, "features": features, "train": TrainConfig(epochs=1, **FAST)}

    def factory() -> GRU4Rec | BERT4Rec:
        if name == "gru4rec":
            model: GRU4Rec | BERT4Rec = GRU4Rec(with_attributes(GRU4RecConfig(**arch), attrs), n)
        else:
            model = BERT4Rec(with_attributes(BERT4RecConfig(layers=1, heads=2, **arch), attrs), n)
        model.set_item_attributes(attrs)
        return model

    model = check_recommender_contract(factory, split.train, split.test, tmp_path=tmp_path, atol=1e-5)
    assert model.module.reads_event_features
    np.testing.assert_array_equal(model.module.features.item_attrs.numpy(), attrs.matrix)


def test_bert4rec_masked_positions_read_no_features_of_their_event() -> None:
    """The [MASK]ed event's type must not reach the model: scores do not change with it."""
    model = bert4rec(20, features=EventFeatures(event_types=True, time_gaps=True)).module.eval()
    items = torch.tensor([[3, 5, 7, 0]])
    batch = Batch(items, torch.tensor([3]), np.zeros(1, dtype=np.int64), torch.tensor([[0, 1, 2, 0]]),
                  torch.tensor([[0, 60_000, 120_000, 0]]))
    a = model.batch_user_vectors(batch)  # predicts event 4 from events 1-3
    # the same history with other types / times *after* the last kept event: no change
    other = Batch(items, torch.tensor([3]), np.zeros(1, dtype=np.int64), torch.tensor([[0, 1, 2, 3]]),
                  torch.tensor([[0, 60_000, 120_000, 9_000_000]]))
    torch.testing.assert_close(model.batch_user_vectors(other), a)
    # while a kept event's type does count
    changed = Batch(items, torch.tensor([3]), np.zeros(1, dtype=np.int64), torch.tensor([[0, 1, 0, 0]]),
                    torch.tensor([[0, 60_000, 120_000, 0]]))
    assert not torch.allclose(model.batch_user_vectors(changed), a)


# ----------------------------------------------------------------------------------------- learning
def test_event_types_decide_the_next_item_and_the_typed_model_learns_it() -> None:
    """Next item = item + 1 after a view, item + 7 after a cart (types at random): an item-only model
    can be right at best half the time, one that reads event types can be right always."""
    rng = np.random.default_rng(0)
    n_items, n_users, length = 30, 600, 20
    items = np.zeros((n_users, length), dtype=np.int64)
    types = rng.choice([VIEW, CART], size=(n_users, length))
    items[:, 0] = rng.integers(1, n_items + 1, n_users)
    for t in range(1, length):  # a loop over positions, not rows
        step = np.where(types[:, t - 1] == VIEW, 1, 7)
        items[:, t] = (items[:, t - 1] - 1 + step) % n_items + 1
    train, hist, targets, _ = last_event_split(make_sequences(items, types, n_items))
    # BERT4Rec learns the step more slowly from cloze targets: wider, longer, more last-item masks
    slow = {"epochs": 40, "hidden": 64, "mask_last_prob": 0.5}
    for build, arch in ((sasrec, {"epochs": 20}), (gru4rec, {"epochs": 20}), (bert4rec, slow)):
        plain = build(n_items, **arch).fit(train)
        typed = build(n_items, **arch, features=EventFeatures(event_types=True)).fit(train)
        hr_plain, hr_typed = hit_rate(plain.score(hist), targets, 1), hit_rate(typed.score(hist), targets, 1)
        assert hr_plain < 0.7, (build.__name__, hr_plain)
        assert hr_typed > hr_plain + 0.2, (build.__name__, hr_typed, hr_plain)


def test_next_type_head_beats_the_baselines_on_a_type_cycle() -> None:
    """Types follow view -> view -> cart -> purchase -> view ... from a random phase: the type after a
    view depends on the one before it, which the one-step Markov baseline cannot see."""
    rng = np.random.default_rng(1)
    cycle = np.array([VIEW, VIEW, CART, PURCHASE])
    n_items, n_users, length = 40, 600, 30  # longer than max_len: every position embedding gets trained
    phase = rng.integers(0, 4, n_users)
    types = cycle[(phase[:, None] + np.arange(length)[None, :]) % 4]
    items = rng.integers(1, n_items + 1, size=(n_users, length))
    seqs = make_sequences(items, types, n_items)
    train, _, _, _ = last_event_split(seqs)
    eval_set = _last_event_eval_set(seqs)
    model = sasrec(n_items, epochs=15, features=EventFeatures(event_types=True), aux={"next_type": 1.0}).fit(train)
    result = evaluate_next_type(model, train, eval_set)
    assert result["markov"]["accuracy"] < 0.8
    assert result["sasrec"]["accuracy"] > 0.95
    assert result["sasrec"]["macro_f1"] > result["markov"]["macro_f1"] + 0.15
    assert (markov_type_predictions(train, eval_set) >= 0).all()


def _last_event_eval_set(seqs: Sequences) -> EvalSet:
    last = np.zeros(seqs.n_events, dtype=bool)
    last[seqs.offsets[1:] - 1] = True
    return EvalSet.from_masks(seqs, ~last, last, min_history=1)


def test_purchase_head_predicts_the_purchase_a_next_item_model_cannot() -> None:
    """Sessions of 'view a, view r1, view r2, purchase f(a)' (r random, f a fixed map), 2-5 sessions
    per user, all shorter than max_len (so every position of a session is trained). After the last
    session's 'view a' the next event is a random view, but the next purchase is f(a): the purchase
    head knows it; a model with only the next-item head does not."""
    rng = np.random.default_rng(2)
    n_items, n_users, most = 40, 800, 5
    a = rng.integers(1, n_items + 1, size=(n_users, most))
    r = rng.integers(1, n_items + 1, size=(n_users, most, 2))
    items = np.stack([a, r[..., 0], r[..., 1], (a - 1 + 5) % n_items + 1], axis=2).reshape(n_users, -1)
    types = np.tile([VIEW, VIEW, VIEW, PURCHASE], (n_users, most))
    sessions = rng.integers(2, most + 1, n_users)
    seqs = make_sequences(items, types, n_items).subset((np.arange(4 * most) < 4 * sessions[:, None]).ravel())
    target = items[np.arange(n_users), 4 * sessions - 1]
    history = np.ones(seqs.n_events, dtype=bool)  # cut the last session after its first view
    for back in (1, 2, 3):
        history[seqs.offsets[1:] - back] = False
    train = seqs.subset(history)
    hist = Histories.from_sequences(train, 50)
    # a history as long as the longest user's puts its last view at a position no training input had
    fair = sessions < most
    features = EventFeatures(event_types=True)
    item_only = sasrec(n_items, epochs=10, max_len=24, features=features).fit(train)
    with_head = sasrec(n_items, epochs=10, max_len=24, features=features, aux={"next_purchase": 1.0}).fit(train)
    hr_item = hit_rate(item_only.score_purchase(hist)[fair], target[fair], 1)  # = its next-item scores
    hr_head = hit_rate(with_head.score_purchase(hist)[fair], target[fair], 1)
    assert hr_head > 0.9, hr_head
    assert hr_item < 0.3, hr_item
    # the evaluator scores the next-purchase task with the purchase head when asked
    eval_set = EvalSet.from_masks(seqs, history, ~history, min_history=1).with_target_types((PURCHASE,))
    assert (eval_set.next_items() == target).all()
    config = EvalConfig(ks=(1,), filter_seen=False, head="purchase")
    assert evaluate(with_head, eval_set, config).metrics["hr@1"] > evaluate(item_only, eval_set, config).metrics[
        "hr@1"] + 0.5


def test_the_purchase_pointer_buys_what_was_carted() -> None:
    """Sessions of 'view v1, cart c, view v2, view v3, purchase c' with v and c random: after the
    last session's third view the next purchase is the carted item, a random one. The pointer over
    the history finds it; the purchase head's softmax over the catalogue has to recover it from
    the sequence state alone, which takes far longer to learn."""
    rng = np.random.default_rng(3)
    n_items, n_users, most = 200, 800, 4
    v = rng.integers(1, n_items + 1, size=(n_users, most, 3))
    c = rng.integers(1, n_items + 1, size=(n_users, most))
    items = np.stack([v[..., 0], c, v[..., 1], v[..., 2], c], axis=2).reshape(n_users, -1)
    types = np.tile([VIEW, CART, VIEW, VIEW, PURCHASE], (n_users, most))
    sessions = rng.integers(2, most + 1, n_users)
    seqs = make_sequences(items, types, n_items).subset((np.arange(5 * most) < 5 * sessions[:, None]).ravel())
    target = items[np.arange(n_users), 5 * sessions - 1]
    history = np.ones(seqs.n_events, dtype=bool)
    history[seqs.offsets[1:] - 1] = False  # cut each user's last purchase
    train = seqs.subset(history)
    hist = Histories.from_sequences(train, 50)
    features = EventFeatures(event_types=True)
    head = sasrec(n_items, epochs=8, max_len=24, features=features,
                  aux={"next_purchase": 1.0, "purchase_copy": False}).fit(train)
    pointer = sasrec(n_items, epochs=8, max_len=24, features=features, aux={"next_purchase": 1.0}).fit(train)
    hr_head = hit_rate(head.score_purchase(hist), target, 1)
    hr_pointer = hit_rate(pointer.score_purchase(hist), target, 1)
    assert hr_pointer > 0.9, hr_pointer
    assert hr_pointer > hr_head + 0.15, (hr_pointer, hr_head)  # measured 0.94 against 0.68
    # learned: a carted item is what gets bought
    w = pointer.module.copy.type_w.weight.detach().squeeze(-1)
    assert w[CART] > w[VIEW]


def test_the_next_item_pointer_learns_repeats_in_sessions(tmp_path: Path) -> None:
    """Sessions of blocks 'a b c a' with a, b, c random: every fourth click repeats the item two
    clicks before the query, a random item. Test sessions are new ones (their first 11 clicks;
    the 12th is the repeat). The next-item pointer learns to copy from a recency cue and the
    sequence; the softmax over the catalogue has to learn to copy through attention, which takes
    far longer. The pointer's scores survive save and reload, and evaluation ranks by them."""
    rng = np.random.default_rng(5)
    n_items, n_train, n_test = 300, 600, 300
    abc = rng.integers(1, n_items + 1, size=(n_train + n_test, 3, 3))
    items = np.concatenate([abc, abc[..., :1]], axis=2).reshape(n_train + n_test, -1)
    train = make_sequences(items[:n_train], np.zeros_like(items[:n_train]), n_items)
    test = make_sequences(items[n_train:, :-1], np.zeros_like(items[n_train:, :-1]), n_items)
    hist, target = Histories.from_sequences(test, 16), items[n_train:, -1].astype(np.int64)
    plain = sasrec(n_items, epochs=6, max_len=16).fit(train)
    pointer = sasrec(n_items, epochs=6, max_len=16, pointer=True).fit(train)
    hr_plain, hr_pointer = hit_rate(plain.score(hist), target, 1), hit_rate(pointer.score(hist), target, 1)
    assert hr_pointer > 0.9, hr_pointer
    assert hr_pointer > hr_plain + 0.3, (hr_pointer, hr_plain)  # measured 1.00 against 0.007
    # evaluation ranks by the pointer's mixture
    eval_set = EvalSet(users=np.arange(n_test, dtype=np.int32), history_offsets=test.offsets,
                       history_items=test.items, history_types=test.event_types,
                       history_timestamps=test.timestamps, target_offsets=np.arange(n_test + 1, dtype=np.int64),
                       target_items=target.astype(np.int32), target_types=np.zeros(n_test, np.int8),
                       target_timestamps=np.zeros(n_test, np.int64))
    got = evaluate(pointer, eval_set, EvalConfig(ks=(1,), filter_seen=False)).metrics["hr@1"]
    assert abs(got - hr_pointer) < 1e-9
    pointer.save(tmp_path / "m")
    torch.testing.assert_close(load_model(tmp_path / "m").score(hist), pointer.score(hist))
    # served with the pointer; the ONNX encoder + item matrix cannot express it and says so
    from shopseq.serving.backends import TorchBackend
    from shopseq.serving.onnx_export import export_wrapper

    np.testing.assert_allclose(TorchBackend(pointer).scores(hist), pointer.score(hist).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pointer"):
        export_wrapper(pointer)


@pytest.mark.parametrize("make", [sasrec, gru4rec], ids=["sasrec", "gru4rec"])
def test_seen_item_offsets_learn_that_users_do_not_repeat(make, tmp_path: Path) -> None:
    """Users pick 20 distinct items from a skewed popularity (a rating log: each item once). The
    next item is then a popular item NOT yet seen; a plain model ranks the popular seen items high,
    the learned offsets push them down (negative weights). Serving and reload keep the offsets."""
    rng = np.random.default_rng(7)
    n_items, n_users, length = 60, 800, 20
    p = 1.0 / np.arange(1, n_items + 1)
    items = np.stack([rng.choice(np.arange(1, n_items + 1), size=length, replace=False, p=p / p.sum())
                      for _ in range(n_users)])
    train, hist, target, _ = last_event_split(make_sequences(items, np.zeros_like(items), n_items))
    plain = make(n_items, epochs=5, max_len=24).fit(train)
    offset = make(n_items, epochs=5, max_len=24, seen_offset=True).fit(train)
    hr_plain, hr_offset = hit_rate(plain.score(hist), target, 10), hit_rate(offset.score(hist), target, 10)
    assert hr_offset > hr_plain + 0.15, (hr_offset, hr_plain)  # measured 0.45 / 0.21 (SASRec), 0.46 / 0.20 (GRU4Rec)
    assert (offset.module.seen_offset.gap_w[:10] < 0).all()
    offset.save(tmp_path / "m")
    torch.testing.assert_close(load_model(tmp_path / "m").score(hist), offset.score(hist))
    from shopseq.serving.backends import TorchBackend

    np.testing.assert_allclose(TorchBackend(offset).scores(hist), offset.score(hist).numpy(), rtol=1e-5, atol=1e-5)


def test_a_run_with_attributes_and_event_features_reloads_with_them(tmp_path: Path) -> None:
    from shopseq.runs.experiment import ExperimentConfig, SplitConfig, load_run, run_experiment

    split = shop_split()
    seqs = split.train
    rng = np.random.default_rng(3)
    attrs = ItemAttributes(rng.integers(1, 9, size=(seqs.n_items + 1, 2)).astype(np.int32), [f"t{i}" for i in range(8)])
    attrs.matrix[0] = 0
    spec = {"model": "sasrec", "hidden": 16, "max_len": 12, "layers": 1, "features": {"event_types": True,
            "time_gaps": True}, "train": {"epochs": 1, **FAST}}
    config = ExperimentConfig(model=spec, split=SplitConfig(method="loo"), baselines=[])
    run_experiment(seqs, config, tmp_path / "run", {}, log=lambda *_: None, attributes=attrs)
    model, _ = load_run(tmp_path / "run")
    assert isinstance(model, SASRec) and model.config.features.attributes
    np.testing.assert_array_equal(model.module.features.item_attrs.numpy(), attrs.matrix)
    assert model.module.reads_event_features
