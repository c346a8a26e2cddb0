"""shopseq side of the peer benchmark: the same atomic file, split and protocol as RecBole's.

    python benchmarks/peers/shopseq_run.py DATASET_DIR --model sasrec --out DIR

DATASET_DIR is the RecBole atomic folder NAME/ with NAME.inter that the peer reads too; it goes
through shopseq's ordinary pipeline (ingest, format ``recbole`` -> sequences -> leave-one-out).
RecBole's protocol, reproduced: the last event of each user is the test target and the
second-last the validation target, full ranking over all items, items the user has seen are
*kept* in the ranking, early stopping on validation NDCG@10 with patience 10 and at most 100
epochs. Prints one JSON line with the same fields as ``recbole_run.py`` and writes the evaluated
(user, target) pairs to ``<model>.valid.tsv`` / ``<model>.test.tsv`` in DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shopseq.benchmarking import peak_rss_mb
from shopseq.data.formats.base import ReadOptions
from shopseq.data.ingest import ingest_file
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.splits import EvalSet, LeaveOneOutSplit
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models.registry import build_model
from shopseq.runs.experiment import model_from_dict

# The shared settings (hidden 64, 2 layers, 2 heads, max length 50, full cross-entropy,
# batch 256); everything else is each system's own default. ``all_windows``: RecBole trains on
# every prefix of a history, so ours must see every event of histories longer than 50 as a target.
# Batch 256 is RecBole's 256 prefix samples, i.e. 256 targets a step. SASRec keeps its own default
# of 256 windows (~1,800 targets on Beauty: sooner to RecBole's best, 424 s against 681 s with 256
# targets); GRU4Rec takes 256 targets (``batch_targets``), which measured better and sooner on
# Beauty and Sports (BENCHMARKS.md, rows labelled with it).
MODELS: dict[str, dict] = {
    "sasrec": {"model": "sasrec", "hidden": 64, "layers": 2, "heads": 2, "max_len": 50},
    "gru4rec": {"model": "gru4rec", "hidden": 64, "layers": 1, "max_len": 50, "train": {"batch_targets": 256}},
}
# every metric reported is at 10 or 20 (as RecBole's full-sort evaluation): ranks inside the top 20
# suffice, and the metrics equal those of exact ranks (tests/test_evaluation.py)
PROTOCOL = EvalConfig(ks=(10, 20), filter_seen=False, exact_ranks=False)


def write_pairs(seqs: Sequences, eval_set: EvalSet, raw_user: dict[str, str], path: Path) -> int:
    """(user id as in the file, target item) pairs; the store holds only pseudonyms of user ids."""
    users = [raw_user[p] for p in seqs.user_vocab.decode(eval_set.users)]
    items = seqs.item_vocab.decode(eval_set.next_items())
    path.write_text("".join(f"{u}\t{i}\n" for u, i in zip(users, items, strict=True)))
    return len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--model", choices=sorted(MODELS), default="sasrec")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--set", dest="settings", default="{}", help="JSON overrides of the model config")
    parser.add_argument("--test-curve", action="store_true",
                        help="diagnostic: also evaluate the test set after every epoch (reported as test_curve, "
                             "never used to select the epoch; its time counts as validation time)")
    args = parser.parse_args()
    name = args.dataset_dir.name
    inter = args.dataset_dir / f"{name}.inter"
    if not inter.exists():
        sys.exit(f"missing {inter}")
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peers-shopseq-") as tmp:
        workspace = Workspace(Path(tmp) / name)
        # a fixed pseudonymisation key, so every run numbers users alike (the seeded batches no
        # longer depend on that order, LengthBatcher keys ties on content; this keeps logs comparable)
        workspace.key_path.parent.mkdir(parents=True, exist_ok=True)
        workspace.key_path.write_text(hashlib.sha256(b"shopseq-peers:" + name.encode()).hexdigest())
        with EventStore.open(workspace) as store:
            report = ingest_file(store, inter, "recbole", ReadOptions())
            seqs = build_sequences(store.con)
            with open(inter) as f:
                next(f)
                raw_user = {store.key.pseudonymise(u): u for u in {line.split("\t", 1)[0] for line in f}}
    split = LeaveOneOutSplit().split(seqs)
    data_seconds = time.perf_counter() - started
    data_peak = peak_rss_mb()  # how much of the peak is ingest (DuckDB) rather than training

    overrides = json.loads(args.settings)
    spec = {**MODELS[args.model], **overrides}
    # train settings merge key by key: an override of one (micro_batch) keeps the model's others (batch_targets)
    spec["train"] = {"batch_size": 256, "loss": "ce", "epochs": args.epochs, "patience": args.patience,
                     "monitor": "ndcg@10", "all_windows": True, "quiet": True, "threads": args.threads or None,
                     **MODELS[args.model].get("train", {}), **overrides.get("train", {})}
    config = model_from_dict(spec, args.seed)
    model = build_model(config, seqs.n_items)
    valid_curve: list[float] = []
    test_curve: list[float] = []

    def validate() -> dict[str, float]:
        metrics = {k: float(v) for k, v in evaluate(model, split.valid, PROTOCOL).metrics.items()}
        valid_curve.append(metrics["ndcg@10"])
        if args.test_curve:
            test_curve.append(float(evaluate(model, split.test, PROTOCOL).metrics["ndcg@10"]))
        return metrics

    model.fit(split.train, validate=validate)
    t0 = time.perf_counter()
    test = evaluate(model, split.test, PROTOCOL)
    test_seconds = time.perf_counter() - t0

    history = model.history
    best = int(np.argmax(valid_curve))
    epochs_run = len(history)
    stopped = "max_epochs" if epochs_run >= args.epochs else "early_stopping"
    keys = ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@10", "mrr@20")

    def renamed(metrics: dict[str, float]) -> dict[str, float]:  # RecBole's names (recall = hr here)
        return {k.replace("hr@", "recall@"): round(float(metrics[k]), 4) for k in keys if k in metrics}

    result = {
        "system": "shopseq", "model": args.model, "dataset": name,
        "n_users": seqs.n_users, "n_items": seqs.n_items, "n_inters": seqs.n_events,
        "rows_not_accepted": report.rows_in - report.accepted,
        "n_train_targets": int(np.maximum(split.train.lengths() - 1, 0).sum()),
        "n_params": sum(p.numel() for p in model.module.parameters() if p.requires_grad),
        "config": config.model_dump(mode="json"),
        "epochs_run": epochs_run, "best_epoch": best + 1, "stopped_by": stopped,
        "sec_per_train_epoch": round(float(np.mean([r["seconds"] for r in history])), 4),
        "sec_per_valid_eval": round(float(np.mean([r["valid_seconds"] for r in history])), 4),
        "epoch_seconds": [r["seconds"] for r in history],
        "valid_epoch_seconds": [r["valid_seconds"] for r in history],
        "valid_curve": [round(v, 4) for v in valid_curve],
        **({"test_curve": [round(v, 4) for v in test_curve]} if args.test_curve else {}),
        "best_valid": {"ndcg@10": round(valid_curve[best], 4)},
        "test": renamed(test.metrics),
        "test_eval_seconds": round(test_seconds, 4),
        "data_prep_seconds": round(data_seconds, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "data_peak_rss_mb": round(data_peak, 1),
        "torch_threads": torch.get_num_threads(),
        "pairs": {"valid": write_pairs(seqs, split.valid, raw_user, args.out / f"{args.model}.valid.tsv"),
                  "test": write_pairs(seqs, split.test, raw_user, args.out / f"{args.model}.test.tsv")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
