"""The contract every ``Recommender`` keeps, as a reusable check (imported by model test files).

Usage from any test module (pytest puts ``tests/`` on ``sys.path``)::

    from contract import check_recommender_contract, shop_split

    def test_sasrec_contract(tmp_path):
        split = shop_split()
        check_recommender_contract(lambda: build_model(SASRecConfig(epochs=1), split.train.n_items),
                                   split.train, split.test, tmp_path=tmp_path, atol=1e-5)

``shop_sequences`` / ``shop_split`` give a small synthetic shop (cached per process) with the
planted sequential structure; they are cheap (~0.3 s) so every model test can use them.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch

from shopseq.data.schema import EVENT_TYPE_NAMES
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.splits import EvalSet, GlobalTimeSplit, LeaveOneOutSplit, Split
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models import registry
from shopseq.models.base import Histories, Recommender

__all__ = ["check_recommender_contract", "shop_sequences", "shop_split"]

SMALL_SHOP = {"n_users": 2000, "n_items": 600, "n_categories": 20, "chunk_users": 2000, "seed": 0}


@functools.cache
def shop_sequences(**overrides: int) -> Sequences:
    """``Sequences`` of a small synthetic shop (``SMALL_SHOP`` updated with ``overrides``)."""
    from shopseq.synthetic import SyntheticShopConfig, generate_shop

    shop = generate_shop(SyntheticShopConfig(**{**SMALL_SHOP, **overrides}))
    # the shop's rows are already in (user, time) order: their position is the tie-breaking seq
    events = shop.events.append_column("seq", pa.array(np.arange(shop.events.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    con.register("shop_events", events)
    codes = " ".join(f"WHEN '{name}' THEN {code}" for code, name in enumerate(EVENT_TYPE_NAMES))
    con.execute(f"""CREATE VIEW events AS SELECT user_id, item_id, timestamp,
                    (CASE event_type {codes} END)::UTINYINT AS event_type, seq FROM shop_events""")
    return build_sequences(con)


@functools.cache
def shop_split(kind: str = "time", **overrides: int) -> Split:
    """A global time split (default fractions) or leave-one-out split of ``shop_sequences``."""
    seqs = shop_sequences(**overrides)
    return (GlobalTimeSplit() if kind == "time" else LeaveOneOutSplit()).split(seqs)


def check_recommender_contract(
    model_factory: Callable[[], Recommender],
    train: Sequences,
    eval_set: EvalSet,
    *,
    tmp_path: Path | None = None,
    batch: int = 24,
    k: int = 10,
    atol: float = 0.0,
    check_determinism: bool = True,
    check_batch_invariance: bool = True,
) -> Recommender:
    """Fit a fresh model and check everything callers rely on; returns the fitted model.

    ``atol`` bounds score differences that must be zero in exact arithmetic (reload, refit, batch
    composition): 0 for counting baselines, ~1e-5 for neural models. Checks: fit returns self;
    ``score`` is float32 (B, n_items + 1), NaN-free, repeatable, owned by the caller (writing into
    it changes no later score) and independent of the other rows of the batch; empty histories
    score; ``recommend`` gives k distinct real items, never seen ones with ``filter_seen``, in
    descending score order; ``encode`` is float32 (B, d) with a fixed d; save ->
    ``registry.load_model`` restores the same class, config and scores; refitting gives the same
    scores; the evaluator runs and gives metrics in [0, 1].
    """
    model = model_factory()
    assert isinstance(model, Recommender)
    assert model.n_items >= train.n_items
    assert model.fit(train) is model, "fit must return self"
    n_cols = model.n_items + 1
    rows = np.arange(min(batch, eval_set.n_users))
    h = Histories.from_eval_set(eval_set, model.max_len, rows)
    b = len(rows)

    with torch.no_grad():
        scores = model.score(h)
        assert isinstance(scores, torch.Tensor) and scores.dtype == torch.float32
        assert tuple(scores.shape) == (b, n_cols), tuple(scores.shape)
        assert not torch.isnan(scores[:, 1:]).any(), "scores must not be NaN"
        torch.testing.assert_close(model.score(h), scores, atol=atol, rtol=0)  # no hidden state / dropout
        scratch = model.score(h)
        scratch.fill_(-1e9)  # the caller owns what score returns: writing into it changes nothing inside
        torch.testing.assert_close(model.score(h), scores, atol=atol, rtol=0)

        if check_batch_invariance:  # evaluation chunks users arbitrarily
            for r in (0, b - 1):
                alone = model.score(Histories.from_eval_set(eval_set, model.max_len, rows[r:r + 1]))
                torch.testing.assert_close(alone[0], scores[r], atol=max(atol, 1e-6), rtol=0)

        cold = model.score(Histories.from_lists([[], [1]], model.max_len))  # a user with no history
        assert tuple(cold.shape) == (2, n_cols) and not torch.isnan(cold[:, 1:]).any()

    kk = min(k, model.n_items - h.items.shape[1])
    top, top_scores = model.recommend(h, k=kk, filter_seen=True)
    assert top.shape == (b, kk) and top_scores.shape == (b, kk)
    assert (top >= 1).all() and (top <= model.n_items).all(), "padding or out-of-range item recommended"
    assert all(len(set(row)) == kk for row in top.tolist()), "duplicate items in a top-k list"
    seen = (top[:, :, None] == h.items[:, None, :]) & (h.items[:, None, :] > 0)
    assert not seen.any(), "a seen item was recommended with filter_seen=True"
    assert (np.diff(top_scores, axis=1) <= 0).all(), "top-k not in descending score order"
    top_all, _ = model.recommend(h, k=kk, filter_seen=False)
    assert (top_all >= 1).all()

    z = model.encode(h)
    assert isinstance(z, np.ndarray) and z.dtype == np.float32 and z.ndim == 2 and z.shape[0] == b
    assert np.isfinite(z).all()
    z1 = model.encode(Histories.from_eval_set(eval_set, model.max_len, rows[:1]))
    assert z1.shape == (1, z.shape[1]), "encode dimension must not depend on the batch"

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp_path or tmp) / f"saved-{model.name}"
        model.save(directory)
        loaded = registry.load_model(directory)
        assert type(loaded) is type(model) and loaded.n_items == model.n_items
        assert loaded.config == model.config
        with torch.no_grad():
            torch.testing.assert_close(loaded.score(h), scores, atol=atol, rtol=0)
        np.testing.assert_allclose(loaded.encode(h), z, atol=max(atol, 1e-7), rtol=0)

    if check_determinism:
        again = model_factory().fit(train)
        with torch.no_grad():
            torch.testing.assert_close(again.score(h), scores, atol=atol, rtol=0)

    result = evaluate(model, eval_set, EvalConfig(ks=(k,), chunk_users=max(1, eval_set.n_users // 3)))
    assert result.n_users == eval_set.n_users
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values() if not math.isnan(v)), result.metrics
    return model
