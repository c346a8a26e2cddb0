"""Training machinery: length-aware batching, the losses against reference implementations, the
schedule, early stopping, and checkpoint / resume equality."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shopseq.data.sequences import Sequences
from shopseq.data.vocab import Vocabulary
from shopseq.models.sasrec import SASRec, SASRecConfig
from shopseq.training import (
    LengthBatcher,
    TrainConfig,
    full_softmax_ce,
    gbce,
    gbce_beta,
    item_log_q,
    lr_factor,
    reference_full_softmax_ce,
    sampled_softmax,
    save_log_csv,
)
from shopseq.training.checkpoint import load_checkpoint


def seqs_from_lists(users: list[list[int]], n_items: int) -> Sequences:
    lengths = np.array([len(u) for u in users])
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.array([i for u in users for i in u], dtype=np.int32)
    return Sequences(offsets, items, np.zeros(len(items), np.int8), np.arange(len(items), dtype=np.int64),
                     Vocabulary([f"u{i}" for i in range(len(users))], "user"),
                     Vocabulary([f"i{i}" for i in range(1, n_items + 1)], "item"))


def chain_sequences(n_users: int = 200, n_items: int = 30, seed: int = 0) -> Sequences:
    """Item i is followed by i + 1 (mod n) with probability 0.8: a real sequential pattern."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        seq = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(2, 25)) - 1):
            nxt = seq[-1] % n_items + 1 if rng.random() < 0.8 else int(rng.integers(1, n_items + 1))
            seq.append(nxt)
        users.append(seq)
    return seqs_from_lists(users, n_items)


# ------------------------------------------------------------------------------------------ batching
def test_batches_cover_every_target_exactly_once_and_pad_little() -> None:
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(0.12, size=3000), 80)  # long-tailed, like real shops
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.arange(1, offsets[-1] + 1)  # every event is its own id: targets are traceable
    window = 51
    batcher = LengthBatcher(offsets, items, window=window, batch_size=64)
    seen: list[np.ndarray] = []
    padded = 0
    for batch in batcher.epoch(np.random.default_rng(1)):
        assert batch.items.shape[1] == int(batch.lengths.max())  # padded to its own longest row only
        padded += batch.items.numel()
        targets = batch.items[:, 1:]
        seen.append(targets[targets != 0].numpy())
        # rows are the user's LAST `window` events, left-aligned, zeros after
        for row, user, n in zip(batch.items.numpy(), batch.users, batch.lengths.numpy(), strict=True):
            end = offsets[user + 1]
            np.testing.assert_array_equal(row[:n], items[end - n:end])
            assert (row[n:] == 0).all()
    got = np.sort(np.concatenate(seen))
    expected = np.concatenate([items[offsets[u + 1] - min(n, window) + 1:offsets[u + 1]]
                               for u, n in enumerate(lengths) if n >= 2])
    np.testing.assert_array_equal(got, np.sort(expected))  # each target once, none missing
    assert padded / batcher.n_events < 1.1, "length bucketing should leave little padding"
    assert padded < 0.25 * batcher.n_users * window  # vs padding every row to the window
    assert len(batcher) == math.ceil(batcher.n_users / 64)
    assert batcher.n_users == int((lengths >= 2).sum())


@pytest.mark.parametrize("stride", [None, 7])
def test_target_budget_batches_hold_about_that_many_targets_and_every_row_once(stride: int | None) -> None:
    rng = np.random.default_rng(3)
    lengths = np.minimum(rng.geometric(0.05, size=800), 200)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.arange(1, offsets[-1] + 1)
    budget = 300
    batcher = LengthBatcher(offsets, items, window=31, batch_size=64, all_windows=True, stride=stride,
                            batch_targets=budget)
    for seed in (0, 1):
        plan = batcher.plan(np.random.default_rng(seed))
        assert len(plan) == len(batcher)  # the schedule's step count is exact
        rows = np.concatenate(plan)
        assert np.array_equal(np.sort(rows), np.arange(batcher.n_users))  # every row exactly once
        totals = np.array([batcher.row_targets[r].sum() for r in plan])
        # a batch starts below the budget and takes its last row whole; all but the last are full
        assert (totals < budget + batcher.row_targets.max()).all()
        assert np.sort(totals)[1:].min() >= budget - batcher.row_targets.max()
        if stride is None:  # many short windows in a batch, few long ones (overlapping rows carry <= 7 each)
            sizes = np.array([len(r) for r in plan])
            widths = np.array([batcher.lengths[r].max() for r in plan])
            assert sizes[widths.argmin()] > 3 * sizes[widths == widths.max()].max()
    # the loss targets a batch carries are what row_targets counts
    batch = batcher.make(plan[0])
    assert int(batch.target_mask().sum()) == int(batcher.row_targets[plan[0]].sum())


@pytest.mark.parametrize("stride", [None, 12, 5])
def test_all_windows_make_every_later_event_a_target_exactly_once(stride: int | None) -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 140, size=400)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.arange(1, offsets[-1] + 1)
    window = 21
    batcher = LengthBatcher(offsets, items, window=window, batch_size=32, all_windows=True, stride=stride)
    seen: list[np.ndarray] = []
    for batch in batcher.epoch(np.random.default_rng(0)):
        for row, user, n in zip(batch.items.numpy(), batch.users, batch.lengths.numpy(), strict=True):
            assert 2 <= n <= window
            start = int(np.searchsorted(items, row[0]))  # a contiguous slice of this user's events
            assert offsets[user] <= start and start + n <= offsets[user + 1]
            np.testing.assert_array_equal(row[:n], items[start:start + n])
        keep = batch.target_mask()
        targets = batch.items[:, 1:]
        seen.append(targets[keep].numpy())
        if stride is not None:  # every target that carries loss has >= window - 1 - stride events before it
            context = (torch.arange(targets.shape[1])[None, :] + 1).expand_as(targets)[keep]
            first_of_user = torch.from_numpy(np.searchsorted(offsets, targets[keep].numpy() - 1, side="right") - 1)
            oldest = (targets[keep] - 1 - torch.from_numpy(offsets[first_of_user.numpy()])) < window
            assert bool(((context >= window - 1 - stride) | oldest).all())
    got = np.sort(np.concatenate(seen))
    # every event but each user's first, once (users with one event train nothing)
    expected = np.concatenate([items[offsets[u] + 1:offsets[u + 1]] for u in range(len(lengths))])
    np.testing.assert_array_equal(got, expected)
    assert batcher.n_users > int((lengths >= 2).sum())  # long histories gave several windows
    assert batcher.target_lengths.sum() - len(batcher.users) == len(expected)  # the loss constant's count


def test_batch_order_depends_on_the_seed_only() -> None:
    seqs = chain_sequences(100)
    batcher = LengthBatcher.from_sequences(seqs, 11, 16)
    a = [r.tolist() for r in batcher.plan(np.random.default_rng(3))]
    b = [r.tolist() for r in batcher.plan(np.random.default_rng(3))]
    c = [r.tolist() for r in batcher.plan(np.random.default_rng(4))]
    assert a == b and a != c


@pytest.mark.parametrize("stride", [None, 4])
def test_batches_do_not_depend_on_the_order_of_users(stride: int | None) -> None:
    """A new workspace numbers users in a new (pseudonym) order: a seeded epoch must not change."""
    rng = np.random.default_rng(0)
    lists = [rng.integers(1, 30, int(n)).tolist() for n in rng.integers(2, 40, 150)]
    perm = rng.permutation(len(lists))
    a = LengthBatcher.from_sequences(seqs_from_lists(lists, 30), 11, 16, all_windows=True, stride=stride)
    b = LengthBatcher.from_sequences(seqs_from_lists([lists[i] for i in perm], 30), 11, 16, all_windows=True,
                                     stride=stride)
    for seed in (0, 1):
        for rows_a, rows_b in zip(a.plan(np.random.default_rng(seed)), b.plan(np.random.default_rng(seed)),
                                  strict=True):
            batch_a, batch_b = a.make(rows_a), b.make(rows_b)
            assert torch.equal(batch_a.items, batch_b.items)
            assert torch.equal(batch_a.lengths, batch_b.lengths)
            assert (batch_a.first_target is None) == (batch_b.first_target is None)
            if batch_a.first_target is not None:
                assert torch.equal(batch_a.first_target, batch_b.first_target)
            assert perm[batch_b.users].tolist() == batch_a.users.tolist()  # the same users, renumbered


# -------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("chunk", [3, 7, 1000])
def test_fused_full_softmax_matches_cross_entropy(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(23, 8, generator=g, dtype=torch.float64).float()
    w = torch.randn(41, 8, generator=g)
    t = torch.randint(1, 41, (23,), generator=g)
    h1, w1 = h.clone().requires_grad_(), w.clone().requires_grad_()
    h2, w2 = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = reference_full_softmax_ce(h1, w1, t)
    manual = F.cross_entropy((h @ w.t())[:, 1:], t - 1, reduction="sum")  # padding column left out
    got = full_softmax_ce(h2, w2, t, chunk=chunk)
    (0.7 * ref).backward()
    (0.7 * got).backward()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_fused_full_softmax_with_a_pointer_matches_the_mixture_it_stands_for(chunk: int) -> None:
    """The pointer's two numbers per row give the loss and gradients of the full mixture
    ``logaddexp(h . w_i, c_i)``: targets in the history (some twice), targets not in it, and a
    pointer far stronger than the catalogue."""
    from shopseq.models.pointer import HistoryPointer

    g = torch.Generator().manual_seed(0)
    n, v, d, width = 29, 40, 8, 5
    h = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g)
    t = torch.randint(1, v, (n,), generator=g)
    items = torch.randint(1, v, (n, width), generator=g)
    items[:8, 0] = t[:8]
    items[:3, 3] = t[:3]
    s = torch.randn(n, width, generator=g) * 3
    s[5, :] += 40.0
    s[6, 4] = float("-inf")  # a padding position
    leaves = [[x.clone().requires_grad_() for x in (h, w, s)] for _ in range(2)]
    (h1, w1, s1), (h2, w2, s2) = leaves
    ref = reference_full_softmax_ce(h1, w1, t, HistoryPointer.item_logits(s1, items, v))
    mass, target = HistoryPointer.masses(s2, items, t)
    assert torch.isinf(target[8:]).all() == (items[8:] != t[8:, None]).all()
    got = full_softmax_ce(h2, w2, t, chunk=chunk, copy_mass=mass, copy_target=target)
    ref.backward()
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    for a, b in ((h1, h2), (w1, w2), (s1, s2)):
        assert torch.isfinite(b.grad).all()
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="both"):
        full_softmax_ce(h, w, t, copy_mass=mass)


@pytest.mark.parametrize("with_pointer", [False, True])
def test_fused_full_softmax_with_offsets_of_the_history_items_matches_dense_offsets(with_pointer: bool) -> None:
    from shopseq.models.pointer import HistoryPointer

    g = torch.Generator().manual_seed(1)
    n, v, d, width = 31, 40, 8, 6
    h, w = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g)
    t = torch.randint(1, v, (n,), generator=g)
    cols = torch.stack([torch.randperm(v - 1, generator=g)[:width] + 1 for _ in range(n)])
    cols[:5, 0] = t[:5]  # targets among the offset items
    cols[6, 2:] = 0  # unused slots
    items = torch.randint(1, v, (n, width), generator=g)
    items[3:9, 1] = t[3:9]
    s = torch.randn(n, width, generator=g)
    vals = torch.randn(n, width, generator=g) * 3
    leaves = [[x.clone().requires_grad_() for x in (h, w, s, vals)] for _ in range(2)]
    (h1, w1, s1, v1), (h2, w2, s2, v2) = leaves
    dense = torch.zeros(n, v).scatter_add(1, cols, v1 * (cols != 0))
    ref = reference_full_softmax_ce(h1, w1, t, HistoryPointer.item_logits(s1, items, v) if with_pointer else None,
                                    dense)
    mass, target = HistoryPointer.masses(s2, items, t) if with_pointer else (None, None)
    got = full_softmax_ce(h2, w2, t, chunk=4, copy_mass=mass, copy_target=target, offset_cols=cols, offset_vals=v2)
    ref.backward()
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    for a, b in ((h1, h2), (w1, w2), (v1, v2)) + (((s1, s2),) if with_pointer else ()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
    assert (v2.grad[cols == 0] == 0).all()


def test_fused_full_softmax_survives_extreme_logits_and_bf16() -> None:
    h = torch.tensor([[30.0, 0.0], [-30.0, 0.0]])
    w = torch.tensor([[0.0, 0.0], [5.0, 0.0], [-5.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([2, 2])
    got = full_softmax_ce(h, w, t)
    ref = reference_full_softmax_ce(h, w, t)
    assert torch.isfinite(got) and abs(float(got) - float(ref)) < 1e-3
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(50, 16, generator=g), torch.randn(30, 16, generator=g) * 0.3
    t = torch.randint(1, 30, (50,), generator=g)
    assert abs(float(full_softmax_ce(h, w, t, bf16=True)) - float(reference_full_softmax_ce(h, w, t))) < 0.5


def test_sampled_softmax_with_logq_matches_a_manual_reference() -> None:
    g = torch.Generator().manual_seed(2)
    n_items, d = 25, 6
    h = torch.randn(9, d, generator=g, requires_grad=True)
    w = torch.randn(n_items + 1, d, generator=g, requires_grad=True)
    t = torch.tensor([3, 3, 7, 1, 25, 7, 9, 10, 3])
    neg = torch.tensor([4, 7, 20, 20, 13])
    counts = torch.arange(n_items + 1, dtype=torch.float64)
    log_pop = item_log_q(counts)
    got = sampled_softmax(h, w, t, neg, log_pop)

    p = counts.clamp_min(0.5)
    p[0] = 0.5
    p = p / p.sum()
    total = torch.zeros(())
    cands = sorted(set(t.tolist())) + neg.tolist()
    for r in range(len(t)):
        logq = [math.log(len(t) * float(p[i]) + len(neg) / n_items) for i in [int(t[r]), *cands]]
        logits = [h[r] @ w[int(t[r])] - logq[0]]
        logits += [h[r] @ w[c] - q for c, q in zip(cands, logq[1:], strict=True) if c != int(t[r])]
        total = total + F.cross_entropy(torch.stack(logits)[None], torch.tensor([0]), reduction="sum")
    torch.testing.assert_close(got, total, rtol=1e-5, atol=1e-5)
    no_q = sampled_softmax(h, w, t, neg, None)
    assert not torch.isclose(no_q, got)
    got.backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


def test_gbce_matches_its_formula() -> None:
    g = torch.Generator().manual_seed(3)
    h, w = torch.randn(7, 5, generator=g), torch.randn(21, 5, generator=g)
    t = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    neg = torch.tensor([8, 9, 3, 15])
    beta = gbce_beta(4, 20, 0.75)
    expected = torch.zeros(())
    for r in range(7):
        expected = expected - beta * F.logsigmoid(h[r] @ w[t[r]])
        for n in neg.tolist():
            if n != int(t[r]):
                expected = expected - F.logsigmoid(-(h[r] @ w[n]))
    torch.testing.assert_close(gbce(h, w, t, neg, beta), expected, rtol=1e-5, atol=1e-5)
    assert gbce_beta(4, 20, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(4, 21, 1.0) == pytest.approx(4 / 20)  # t = 1: beta = sampling rate


def test_warmup_then_cosine_schedule() -> None:
    c = TrainConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 100, c) == pytest.approx(0.1)
    assert lr_factor(9, 100, c) == pytest.approx(1.0)
    assert lr_factor(10, 100, c) == pytest.approx(1.0)
    assert lr_factor(55, 100, c) == pytest.approx(0.55)
    assert lr_factor(100, 100, c) == pytest.approx(0.1)
    assert lr_factor(50, 100, c.model_copy(update={"schedule": "constant"})) == 1.0
    assert lr_factor(2, 100, c, warmup=4) == pytest.approx(0.75)  # an explicit (capped) warm-up


def test_warmup_is_capped_at_one_epoch_and_lr_defaults_per_model() -> None:
    from shopseq.models.gru4rec import GRU4Rec, GRU4RecConfig

    seqs = chain_sequences(120)  # 120 users / 32 per batch = 4 steps per epoch
    tc = {"epochs": 2, "batch_size": 32, "lr": None, "warmup_steps": 100, "quiet": True, "threads": 1}
    sasrec = tiny_sasrec(seqs.n_items, **tc).fit(seqs)
    gru = GRU4Rec(GRU4RecConfig(hidden=16, max_len=12, train=TrainConfig(**tc)), seqs.n_items).fit(seqs)
    # after epoch 1 the warm-up (4 steps, not 100) is over: the lr is at its peak, on the cosine
    peak_factor = lr_factor(4, 8, TrainConfig(), warmup=4)
    assert sasrec.history[0]["lr"] == pytest.approx(1e-3 * peak_factor)
    assert gru.history[0]["lr"] == pytest.approx(3e-3 * peak_factor)
    assert TrainConfig(lr=0.02).lr == 0.02  # an explicit lr wins over the model's default


# ------------------------------------------------------------------------------------- the training loop
def tiny_sasrec(n_items: int, **train: object) -> SASRec:
    base = {"epochs": 4, "batch_size": 32, "lr": 5e-3, "warmup_steps": 2, "quiet": True, "threads": 1}
    tc = TrainConfig(**{**base, **train})
    return SASRec(SASRecConfig(hidden=16, layers=1, heads=1, max_len=12, dropout=0.2, train=tc), n_items)


def weights(model: SASRec) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.module.state_dict().items()}


@pytest.mark.parametrize("loss", ["ce", "sampled", "gbce"])
def test_every_loss_trains(loss: str) -> None:
    seqs = chain_sequences(120)
    model = tiny_sasrec(seqs.n_items, loss=loss, n_negatives=8, epochs=8).fit(seqs)
    assert len(model.history) == 8
    assert model.history[-1]["loss"] < model.history[0]["loss"] - 0.2
    assert {"epoch", "loss", "seconds", "lr", "targets_per_s"} <= set(model.history[0])


def test_target_budget_batches_train_with_one_loss_scale() -> None:
    from shopseq.training.trainer import Trainer

    seqs = chain_sequences(120)
    model = tiny_sasrec(seqs.n_items, batch_targets=60, epochs=6).fit(seqs)
    assert model.history[-1]["loss"] < model.history[0]["loss"] - 0.2
    # a full batch of next-item targets weighs like batch_targets of them, whatever its rows
    batcher = LengthBatcher.from_sequences(seqs, model.module.window, 32, batch_targets=60)
    trainer = Trainer(model.module, batcher, model.config.train, n_items=seqs.n_items)
    assert trainer.norm == pytest.approx(60.0)
    assert len(batcher) > 120 // 32 + 1  # ~12 targets per user: more, smaller batches than 32 users


def test_early_stopping_restores_the_best_epoch() -> None:
    seqs = chain_sequences(80)
    model = tiny_sasrec(seqs.n_items, epochs=10, patience=2)
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snapshots: list[dict[str, torch.Tensor]] = []

    def validate() -> dict[str, float]:
        snapshots.append(weights(model))
        return {"ndcg@10": next(scripted)}

    model.fit(seqs, validate=validate)
    assert [r["epoch"] for r in model.history] == [1, 2, 3, 4]  # 2 epochs without gain after epoch 2
    assert [r["valid_ndcg@10"] for r in model.history] == [0.1, 0.3, 0.2, 0.25]
    for k, v in weights(model).items():
        torch.testing.assert_close(v, snapshots[1][k], rtol=0, atol=0)


def test_weight_average_is_validated_and_kept_while_training_follows_the_raw_weights() -> None:
    seqs = chain_sequences(100)
    raw = tiny_sasrec(seqs.n_items).fit(seqs)
    averaged = tiny_sasrec(seqs.n_items, ema_epochs=1.0)
    seen: list[dict[str, torch.Tensor]] = []

    def validate() -> dict[str, float]:
        seen.append(weights(averaged))
        return {"ndcg@10": float(len(seen))}  # always a gain: the last epoch is kept

    averaged.fit(seqs, validate=validate)
    # validating on the average never disturbs training: the same losses, epoch after epoch
    assert [r["loss"] for r in averaged.history] == pytest.approx([r["loss"] for r in raw.history], rel=1e-6)
    final = weights(averaged)
    assert not torch.allclose(final["item_emb.weight"], weights(raw)["item_emb.weight"], atol=1e-4)
    for k in final:
        torch.testing.assert_close(final[k], seen[-1][k], rtol=0, atol=0)
    # a time constant shorter than a step makes the average the raw weights themselves
    instant = tiny_sasrec(seqs.n_items, ema_epochs=1e-6).fit(seqs)
    for k, v in weights(instant).items():
        torch.testing.assert_close(v, weights(raw)[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ema_epochs", [None, 1.0])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path: Path, ema_epochs: float | None) -> None:
    seqs = chain_sequences(100)
    metric = lambda m: (lambda: {"ndcg@10": float(m.module.pos_emb.weight.detach().sum())})  # noqa: E731

    straight = tiny_sasrec(seqs.n_items, ema_epochs=ema_epochs)
    straight.fit(seqs, validate=metric(straight))

    crashed = tiny_sasrec(seqs.n_items, ema_epochs=ema_epochs)
    calls = {"n": 0}

    def crash_in_epoch_3() -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after epoch 2's checkpoint, before epoch 3's
        return metric(crashed)()

    with pytest.raises(KeyboardInterrupt):
        crashed.fit(seqs, validate=crash_in_epoch_3, checkpoint_dir=tmp_path / "ckpt")
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt is not None and ckpt.meta["epoch"] == 2
    # safetensors + JSON only, no pickle anywhere
    assert sorted(p.suffix for p in (tmp_path / "ckpt").iterdir()) == [".json", ".safetensors"]
    json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())

    resumed = tiny_sasrec(seqs.n_items, ema_epochs=ema_epochs)  # a fresh process would start like this
    resumed.fit(seqs, validate=metric(resumed), checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["valid_ndcg@10"] == pytest.approx(b["valid_ndcg@10"], rel=1e-6, abs=1e-7)
    want, got = weights(straight), weights(resumed)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert load_checkpoint(tmp_path / "ckpt").meta["epoch"] == 4
    with pytest.raises(ValueError, match="other training settings"):
        tiny_sasrec(seqs.n_items, lr=1e-2).fit(seqs, checkpoint_dir=tmp_path / "ckpt", resume=True)


@pytest.mark.parametrize("fused", [True, False])
def test_our_adamw_matches_torch_adamw_step_for_step(fused: bool) -> None:
    from shopseq.training.optim import AdamW

    if fused and not hasattr(torch, "_fused_adamw_"):
        pytest.skip("this torch has no fused AdamW kernel")
    torch.manual_seed(0)
    ours_p = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    ref_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = AdamW([([ours_p[0]], 0.1), ([ours_p[1]], 0.0)], betas=(0.9, 0.98), fused=fused)
    ref = torch.optim.AdamW([{"params": [ref_p[0]], "weight_decay": 0.1}, {"params": [ref_p[1]], "weight_decay": 0.0}],
                            lr=1.0, betas=(0.9, 0.98))
    for step, lr in enumerate([1e-2, 5e-3, 2e-2, 1e-3]):
        grads = [torch.randn_like(p) for p in ours_p]
        for p, q, g in zip(ours_p, ref_p, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        if step == 2:
            ours_p[1].grad = ref_p[1].grad = None  # a parameter without a gradient is left alone
        ref.param_groups[0]["lr"] = ref.param_groups[1]["lr"] = lr
        ours.step(lr)
        ref.step()
        for p, q in zip(ours_p, ref_p, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    # its checkpoint tensors restore it exactly
    again = AdamW([([ours_p[0]], 0.1), ([ours_p[1]], 0.0)], betas=(0.9, 0.98), fused=fused)
    again.load_state_tensors(ours.state_tensors())
    assert again.steps == 4
    torch.testing.assert_close(again.exp_avg_sq[0], ours.exp_avg_sq[0], rtol=0, atol=0)


def test_micro_batches_give_the_update_of_the_whole_batch() -> None:
    seqs = chain_sequences(100)
    tc = {"epochs": 2, "batch_size": 32, "lr": 5e-3, "warmup_steps": 2, "quiet": True, "threads": 1}
    # no dropout: the two runs differ only in how a batch is cut
    whole, split = (SASRec(SASRecConfig(hidden=16, layers=1, heads=1, max_len=12, dropout=0.0,
                                        train=TrainConfig(**tc, micro_batch=m)), seqs.n_items).fit(seqs)
                    for m in (None, 5))
    assert [r["loss"] for r in split.history] == pytest.approx([r["loss"] for r in whole.history], rel=1e-5)
    for k, v in weights(whole).items():
        torch.testing.assert_close(weights(split)[k], v, rtol=1e-4, atol=1e-5)


def test_training_never_imports_torch_dynamo() -> None:
    """torch.optim's first optimizer imports torch._dynamo and sympy (~70 MB resident): ours must not."""
    import subprocess
    import sys

    code = ("import sys; from tests.test_training import chain_sequences, tiny_sasrec; "
            "s = chain_sequences(40); tiny_sasrec(s.n_items, epochs=1).fit(s); "
            "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_log_is_written_as_csv(tmp_path: Path) -> None:
    path = save_log_csv([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5, "valid_ndcg@10": 0.1}],
                        tmp_path / "log.csv")
    assert path.read_text().splitlines() == ["epoch,loss,valid_ndcg@10", "1,2.0,", "2,1.5,0.1"]
