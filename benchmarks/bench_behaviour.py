"""Multi-behaviour ablation: does SASRec gain from event types, time features, item attributes,
the next-purchase / next-type heads and the purchase head's pointer over the history
(``models.purchase_copy``: buy what was carted)?

    python benchmarks/bench_behaviour.py --datasets synthetic taobao --seed 0

Protocol (every number says it): global time split (the last 10% of events by time are the test
window, the 10% before it validation), full ranking over all items, seen items KEPT (shops re-view
and re-buy: a seen-item filter would make every repeat purchase unreachable). Per variant:

* next item: the first test-window event of each user (HR@10, NDCG@10);
* next purchase: the first PURCHASE of each user's test window, scored with the purchase head
  where the variant has one, with the next-item scores otherwise (HR@10, NDCG@10). Its input is
  the history plus the test window's events before that purchase (``--purchase-input visit``,
  the moment a shop would ask: this visit's views and carts are known), or the history before
  the window only (``before-window``, the protocol of the first records);
* next event type (variants with the type head): accuracy and macro-F1 against the majority
  class and the type-Markov baseline;
* purchase intent: P(any purchase in the last day of the log), a calibrated logistic model on the
  variant's user vectors + activity features, fitted on the day before (AUC, log loss, ECE against
  RFM; ``shopseq.applications.intent``).

Beside them, the cart-first rule (``baselines.CartFirst``: open carts first, then the history by
recency), the bar a purchase head has to clear; with ``--blend-rule`` each variant with a purchase
head is also reported mixed with that rule (``models.blend``, the weight chosen on validation
next-purchase NDCG@10). Every variant trains with the same budget and early-stops on validation next-purchase NDCG@10
(the task the heads are for); the item-only variant is the plain SASRec of the Amazon benchmark.
Data: the built-in synthetic shop (generated here) and the Taobao UserBehavior head sample from
../shared/data (skipped with a message when absent). Records go to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shopseq.applications.data import AppData
from shopseq.applications.intent import evaluate_intent
from shopseq.applications.windowed import WindowConfig
from shopseq.benchmarking import BenchRecord, append_record, peak_rss_mb, write_markdown
from shopseq.data.attributes import ItemAttributes, item_attributes
from shopseq.data.formats.base import ReadOptions
from shopseq.data.ingest import ingest_file
from shopseq.data.schema import EventType
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.splits import GlobalTimeSplit, Split
from shopseq.data.store import EventStore, upsert_items
from shopseq.data.workspace import Workspace
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.evaluation.next_type import evaluate_next_type
from shopseq.models.base import Recommender
from shopseq.models.baselines import CartFirst, CartFirstConfig
from shopseq.models.blend import Blend, BlendConfig
from shopseq.models.features import EventFeatures, with_attributes
from shopseq.models.sasrec import SASRec, SASRecConfig
from shopseq.training import TrainConfig

SHARED = Path(os.environ.get("SHOPSEQ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TAOBAO = SHARED / "taobao-userbehavior-sample" / "UserBehavior_head.csv.gz"
PURCHASE = (int(EventType.PURCHASE),)

TYPES = {"event_types": True}
TIME = {"event_types": True, "time_gaps": True, "hour_of_week": True}
HEADS = {"next_purchase": 0.5, "next_type": 0.2, "purchase_copy": False}
POINTER = {**HEADS, "purchase_copy": True}
# label -> (event features, use attributes, auxiliary heads, next-item pointer over the history)
VARIANTS: dict[str, tuple[dict[str, bool], bool, dict[str, float], bool]] = {
    "item only": ({}, False, {}, False),
    "+ event types": (TYPES, False, {}, False),
    "+ types + time": (TIME, False, {}, False),
    "+ types + time + attributes": (TIME, True, {}, False),
    "+ types + time + attributes + heads": (TIME, True, HEADS, False),
    "+ types + time + attributes + heads + purchase pointer": (TIME, True, POINTER, False),
    "+ types + time + heads + purchase pointer": (TIME, False, POINTER, False),
    # where nearly every next event re-visits a history item (the Taobao sample), the next-item
    # head needs its own pointer to score those items (SASRecConfig.pointer)
    "+ types + time + heads + both pointers": (TIME, False, POINTER, True),
}


Loaded = tuple[Sequences, ItemAttributes, AppData]


def load_synthetic(scratch: Path, users: int, seed: int) -> Loaded:
    from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
    from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

    root = scratch / f"synthetic-{users}-{seed}"
    shop_dir = root / "shop"
    if not (shop_dir / "events.parquet").exists():
        write_shop(generate_shop(SyntheticShopConfig(n_users=users, seed=seed)), shop_dir)
    with EventStore.open(Workspace(root / "ws")) as store:
        ingest_file(store, shop_dir / "events.parquet", "parquet", SYNTHETIC_OPTIONS)
        import pyarrow.parquet as pq

        upsert_items(store, pq.read_table(shop_dir / "items.parquet"))
        seqs = build_sequences(store.con)
        return seqs, item_attributes(store.con, seqs.item_vocab), AppData.from_store(store, seqs.item_vocab)


def load_taobao(scratch: Path) -> Loaded | None:
    if not TAOBAO.exists():
        print(f"skipping taobao: {TAOBAO} is absent", file=sys.stderr)
        return None
    with EventStore.open(Workspace(scratch / "taobao")) as store:
        ingest_file(store, TAOBAO, "taobao", ReadOptions())
        seqs = build_sequences(store.con)
        return seqs, item_attributes(store.con, seqs.item_vocab), AppData.from_store(store, seqs.item_vocab)


def make_model(label: str, n_items: int, attrs: ItemAttributes, train: TrainConfig) -> SASRec:
    features, use_attrs, heads, pointer = VARIANTS[label]
    config = SASRecConfig(features=EventFeatures(**features), aux=heads, pointer=pointer, train=train)
    if use_attrs:
        config = with_attributes(config, attrs)
    model = SASRec(config, n_items)
    if use_attrs:
        model.set_item_attributes(attrs)
    return model


def purchase_validator(model: SASRec, split: Split, visit: bool) -> Callable[[], dict[str, float]]:
    valid = split.valid.with_target_types(PURCHASE, window_context=visit)
    config = EvalConfig(ks=(10,), filter_seen=False, head="purchase")
    return lambda: {k: float(v) for k, v in evaluate(model, valid, config).metrics.items()}


def run_variant(label: str, dataset: str, loaded: Loaded, split: Split, train: TrainConfig, command: str,
                record: bool, visit: bool, blend_rule: bool) -> dict[str, dict[str, float]]:
    seqs, attrs, app_data = loaded
    model = make_model(label, seqs.n_items, attrs, train)
    started = time.perf_counter()
    model.fit(split.train, validate=purchase_validator(model, split, visit))
    train_seconds = time.perf_counter() - started
    metrics = next_item_and_purchase(model, split, visit)
    types = evaluate_next_type(model, split.train, split.test)
    if model.name in types:
        metrics |= {"type_acc": types[model.name]["accuracy"], "type_f1": types[model.name]["macro_f1"],
                    "markov_type_acc": types["markov"]["accuracy"], "markov_type_f1": types["markov"]["macro_f1"],
                    "majority_type_acc": types["majority"]["accuracy"]}
    intent = evaluate_intent(model, app_data, WindowConfig(horizon_days=1.0))
    metrics |= {"intent_auc": intent.metrics["auc_model"], "intent_log_loss": intent.metrics["log_loss"],
                "intent_ece": intent.metrics["ece"], "intent_auc_rfm": intent.metrics["auc_rfm"],
                "intent_auc_activity_only": intent.metrics["auc_activity_only"]}
    per_epoch = [r["seconds"] for r in model.history]
    timing = {"seconds_per_epoch": round(sum(per_epoch) / max(len(per_epoch), 1), 2), "epochs": len(per_epoch),
              "train_seconds": round(train_seconds, 1)}
    results = {label: report(dataset, "sasrec", label, metrics, loaded, split, visit, timing, {}, train.seed,
                             command, record)}
    if blend_rule and model.has_purchase_head:
        # the learned purchase head mixed with the cart-first rule, the weight chosen on validation purchases
        rule = CartFirst(CartFirstConfig(), seqs.n_items).fit(split.train)
        blend = Blend.from_members([model, rule], BlendConfig(members=[model.config, rule.config],
                                                              monitor="ndcg@10", head="purchase"))
        blend.choose_weights(split.valid.with_target_types(PURCHASE, window_context=visit))
        extra = {"blend": {"weights": blend.weights, "chosen_on": "valid next-purchase ndcg@10",
                           "tuning": blend.tuning}}
        results[f"{label} + cart-first blend"] = report(
            dataset, "sasrec+cartfirst", f"{label} + cart-first blend", next_item_and_purchase(blend, split, visit),
            loaded, split, visit, timing, extra, train.seed, command, record)
    return results


def run_baseline(dataset: str, loaded: Loaded, split: Split, seed: int, command: str, record: bool,
                 visit: bool) -> dict[str, float]:
    """The cart-first rule: nothing to train, no user vectors (its intent and type columns stay empty)."""
    rule = CartFirst(CartFirstConfig(), loaded[0].n_items).fit(split.train)
    return report(dataset, "cartfirst", "baseline", next_item_and_purchase(rule, split, visit), loaded, split,
                  visit, {}, {}, seed, command, record)


def next_item_and_purchase(model: Recommender, split: Split, visit: bool) -> dict[str, float]:
    item_cfg = EvalConfig(ks=(10,), filter_seen=False)
    next_item = evaluate(model, split.test, item_cfg)
    test_p = split.test.with_target_types(PURCHASE, window_context=visit)
    next_purchase = evaluate(model, test_p, item_cfg.model_copy(update={"head": "purchase"}))
    return {"item_ndcg@10": next_item.metrics["ndcg@10"], "item_hr@10": next_item.metrics["hr@10"],
            "purchase_ndcg@10": next_purchase.metrics["ndcg@10"], "purchase_hr@10": next_purchase.metrics["hr@10"]}


def report(dataset: str, model: str, label: str, metrics: dict[str, float], loaded: Loaded, split: Split,
           visit: bool, timing: dict[str, float], extra: dict[str, Any], seed: int, command: str,
           record: bool) -> dict[str, float]:
    seqs, attrs, _ = loaded
    print(f"{dataset} · {model} · {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
          + (f" · {timing['epochs']} epochs, {timing['train_seconds']:.0f} s" if timing else ""), flush=True)
    if record:
        test_p = split.test.with_target_types(PURCHASE, window_context=visit)
        append_record(BenchRecord(
            bench="behaviour-ablation", dataset=dataset, model=model, variant=label,
            counts={"users": seqs.n_users, "items": seqs.n_items, "events": seqs.n_events,
                    "test_users": split.test.n_users, "purchase_test_users": test_p.n_users},
            protocol={"split": "global time 80/10/10", "ranking": "full", "filter_seen": False,
                      "early_stopping": "valid next-purchase NDCG@10",
                      "purchase_input": "history + the window's events before the purchase" if visit
                      else "history before the test window",
                      "attribute_coverage": round(attrs.coverage(), 3), **extra},
            metrics={k: round(v, 5) for k, v in metrics.items()},
            timing={**timing, "peak_rss_mb": round(peak_rss_mb())},
            seed=seed, command=command,
        ))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "taobao"], choices=["synthetic", "taobao"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--users", type=int, default=10_000, help="synthetic shop size")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--purchase-input", choices=["visit", "before-window"], default="visit",
                        help="next-purchase input: with the window's events before the purchase, or without")
    parser.add_argument("--no-baseline", action="store_true", help="skip the cart-first rule's row")
    parser.add_argument("--blend-rule", action="store_true",
                        help="also report each variant with a purchase head mixed with the cart-first rule")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shopseq-bench/behaviour"))
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to results.jsonl")
    args = parser.parse_args()
    command = "python benchmarks/bench_behaviour.py " + " ".join(sys.argv[1:])
    train = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, threads=args.threads, quiet=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for dataset in args.datasets:
        loaded = load_synthetic(args.scratch, args.users, args.seed) if dataset == "synthetic" else load_taobao(
            args.scratch)
        if loaded is None:
            continue
        seqs, attrs, _ = loaded
        split = GlobalTimeSplit().split(seqs)
        print(f"{dataset}: {seqs!r}; attributes on {attrs.coverage():.0%} of items ({attrs.n_tokens} tokens)\n"
              f"{split.describe()}", flush=True)
        visit = args.purchase_input == "visit"
        results[dataset] = {}
        if not args.no_baseline:
            results[dataset]["cart-first rule"] = run_baseline(dataset, loaded, split, args.seed, command,
                                                               not args.no_record, visit)
        for label in args.variants:
            results[dataset] |= run_variant(label, dataset, loaded, split, train, command, not args.no_record,
                                            visit, args.blend_rule)
    print(json.dumps(results, indent=2))
    if not args.no_record:
        write_markdown()


if __name__ == "__main__":
    main()
