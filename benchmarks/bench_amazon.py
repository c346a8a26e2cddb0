"""The published next-item protocol on Amazon Beauty / Sports / Toys (S3-Rec 5-core versions).

    python benchmarks/bench_amazon.py --datasets beauty sports toys --model sasrec --seeds 0 1 2

Leave-one-out (last item test, second-last validation), full ranking over all items, items the
user has already seen filtered: the protocol of S3-Rec, CL4SRec, DuoRec, BSARec. Data comes from
../shared/data/amazon-s3rec (skipped with a message when absent) and goes through the ordinary
pipeline: ingest (format s3rec) -> sequences -> LeaveOneOutSplit -> fit with early stopping on
validation NDCG@10 -> test. Each run appends a record to benchmarks/results.jsonl and rewrites
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shopseq.benchmarking import BenchRecord, append_record, peak_rss_mb, write_markdown
from shopseq.data.attributes import ItemAttributes, item_attributes
from shopseq.data.formats.base import ReadOptions
from shopseq.data.ingest import ingest_file
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.splits import LeaveOneOutSplit
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models.features import with_attributes
from shopseq.models.registry import build_model
from shopseq.runs.experiment import model_from_dict

DATASETS = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}
SHARED = Path(os.environ.get("SHOPSEQ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load(dataset: str, scratch: Path) -> tuple[Sequences, ItemAttributes] | None:
    src = SHARED / "amazon-s3rec" / f"{DATASETS[dataset]}.txt.gz"
    if not src.exists():
        print(f"skipping {dataset}: {src} is absent", file=sys.stderr)
        return None
    with EventStore.open(Workspace(scratch / dataset)) as store:
        ingest_file(store, src, "s3rec", ReadOptions())  # with <Name>_item2attributes.json -> items table
        seqs = build_sequences(store.con)
        return seqs, item_attributes(store.con, seqs.item_vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["beauty"], choices=sorted(DATASETS))
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--variant", default="default", help="label for this configuration in the records")
    parser.add_argument("--set", dest="settings", default="{}", help='JSON model overrides, e.g. \'{"hidden": 64}\'')
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--attributes", action="store_true",
                        help="feed the S3-Rec item attributes (categories, brand) to the model (SASRec)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shopseq-bench/amazon"))
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to results.jsonl")
    args = parser.parse_args()
    overrides = json.loads(args.settings)
    command = "python benchmarks/bench_amazon.py " + " ".join(sys.argv[1:])
    eval_config = EvalConfig(ks=(10, 20), filter_seen=True)
    for dataset in args.datasets:
        loaded = load(dataset, args.scratch)
        if loaded is None:
            continue
        seqs, attrs = loaded
        split = LeaveOneOutSplit().split(seqs)
        for seed in args.seeds:
            spec = {"model": args.model, **overrides}
            config = model_from_dict(spec, seed)
            if args.attributes:
                config = with_attributes(config, attrs)
            model = build_model(config, seqs.n_items)
            if args.attributes:
                model.set_item_attributes(attrs)  # type: ignore[attr-defined]
            started = time.perf_counter()
            model.fit(split.train, split.valid)
            train_seconds = time.perf_counter() - started
            test = evaluate(model, split.test, eval_config)
            history = getattr(model, "history", [])
            epochs = len(history)
            per_epoch = [r["seconds"] for r in history if "seconds" in r]
            record = BenchRecord(
                bench="amazon-loo", dataset=dataset, model=args.model, variant=args.variant,
                counts={"users": seqs.n_users, "items": seqs.n_items, "interactions": seqs.n_events},
                protocol={"split": "leave-one-out", "ranking": "full", "filter_seen": True,
                          "item_attributes": args.attributes,
                          "valid_users": split.valid.n_users, "test_users": split.test.n_users},
                metrics={k: round(v, 5) for k, v in test.metrics.items()
                         if k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr")},
                timing={"seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 2) if per_epoch else 0.0,
                        "epochs": epochs, "train_seconds": round(train_seconds, 1),
                        "eval_seconds": round(test.seconds, 2), "peak_rss_mb": round(peak_rss_mb())},
                seed=seed, command=command,
                notes=json.dumps({k: v for k, v in config.model_dump().items() if k != "model"}, default=str),
            )
            print(f"{dataset} seed {seed}: {test.describe()} · train {train_seconds:.0f} s, {epochs} epochs")
            if not args.no_record:
                append_record(record)
    if not args.no_record:
        write_markdown()


if __name__ == "__main__":
    main()
