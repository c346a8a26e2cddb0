"""A million-item catalogue: one SASRec training epoch with sampled softmax vs full softmax, and
full-ranking evaluation with a bounded score matrix.

    python benchmarks/bench_scale.py --items 1000000 --users 200000 --seed 0

Data: synthetic sequences drawn here (Zipf item popularity, exponent 1.05, so every item exists
but most are rare; mean 20 events per user, log-normal lengths) — the point is the catalogue
size, not the pattern. Measured in separate child processes so peak memory is per stage:

* sampled: one full epoch, in-batch + ``--negatives`` uniform negatives with logQ correction;
* full: full-softmax cross-entropy over all items (the fused chunked kernel) on the first
  ``--full-batches`` batches of the same epoch plan, extrapolated to the epoch and labelled so;
* evaluation: full ranking of ``--eval-users`` users over every item, in chunks bounded by
  ``EvalConfig.max_score_mb``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from shopseq.benchmarking import BenchRecord, append_record, peak_rss_mb, write_markdown
from shopseq.data.sequences import Sequences
from shopseq.data.vocab import Vocabulary


def make_sequences(n_users: int, n_items: int, seed: int) -> Sequences:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(14), 0.8, n_users).astype(np.int64), 2, 200)
    n_events = int(lengths.sum())
    # Zipf over ranks via inverse CDF of a continuous power law: fast for a million items
    u = rng.random(n_events)
    a = 1.05
    ranks = np.floor(((n_items ** (1 - a) - 1) * u + 1) ** (1 / (1 - a))).astype(np.int64)
    items = (np.clip(ranks, 1, n_items)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(offsets=offsets, items=items, event_types=np.zeros(n_events, np.int8),
                     timestamps=np.arange(n_events, dtype=np.int64),
                     user_vocab=Vocabulary([f"u{i}" for i in range(n_users)], "user"),
                     item_vocab=Vocabulary([f"i{i}" for i in range(1, n_items + 1)], "item"))


def child(stage: str, args: argparse.Namespace) -> dict:
    import torch

    from shopseq.models.sasrec import SASRec, SASRecConfig
    from shopseq.training import TrainConfig
    from shopseq.training.batching import LengthBatcher
    from shopseq.training.trainer import Trainer

    seqs = make_sequences(args.users, args.items, args.seed)
    loss = "sampled" if stage == "sampled" else "ce"
    config = SASRecConfig(train=TrainConfig(epochs=1, loss=loss, n_negatives=args.negatives, batch_size=256,
                                            quiet=True, seed=args.seed, warmup_steps=10))
    model = SASRec(config, args.items)
    if stage == "eval":
        from shopseq.data.splits import LeaveOneOutSplit
        from shopseq.evaluation import EvalConfig, evaluate

        split = LeaveOneOutSplit().split(seqs.subset(np.repeat(np.arange(seqs.n_users) < args.eval_users,
                                                               seqs.lengths())))
        started = time.perf_counter()
        result = evaluate(model, split.test, EvalConfig(ks=(10,), filter_seen=True))
        return {"seconds": time.perf_counter() - started, "users": result.n_users, "peak_rss_mb": peak_rss_mb()}
    batcher = LengthBatcher.from_sequences(seqs, model.module.window, 256)
    counts = np.bincount(seqs.items, minlength=args.items + 1)
    if stage == "full":  # only the first batches of the same plan: an epoch would take hours
        plan = batcher.plan(np.random.default_rng(args.seed))[: args.full_batches]
        batcher.plan = lambda rng: plan  # type: ignore[method-assign]
    trainer = Trainer(model.module, batcher, config.train, n_items=args.items, item_counts=counts)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    rows = np.concatenate(plan) if stage == "full" else np.arange(batcher.n_users)
    n_batches = len(plan) if stage == "full" else len(batcher)
    targets = int((batcher.lengths[rows] - 1).sum())  # every position after the first is a target
    return {"seconds": seconds, "batches": n_batches, "epoch_batches": len(batcher), "targets": targets,
            "events": seqs.n_events, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--full-batches", type=int, default=10)
    parser.add_argument("--eval-users", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["sampled", "full", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    command = "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:])
    base = [sys.executable, __file__, "--items", str(args.items), "--users", str(args.users), "--negatives",
            str(args.negatives), "--full-batches", str(args.full_batches), "--eval-users", str(args.eval_users),
            "--seed", str(args.seed)]
    results = {}
    for stage in ("sampled", "full", "eval"):
        out = subprocess.run([*base, "--child", stage], capture_output=True, text=True, check=True)
        results[stage] = json.loads(out.stdout.strip().splitlines()[-1])
        print(stage, results[stage], flush=True)
    s, f, e = results["sampled"], results["full"], results["eval"]
    full_epoch = f["seconds"] / f["batches"] * f["epoch_batches"]
    counts = {"users": args.users, "items": args.items, "events": s["events"], "batches_per_epoch": s["epoch_batches"]}
    records = [
        ("sampled softmax", {"epoch_seconds": s["seconds"], "targets_per_s": s["targets"] / s["seconds"]},
         {"seconds": s["seconds"], "peak_rss_mb": s["peak_rss_mb"]}, f"in-batch + {args.negatives} uniform, logQ"),
        ("full softmax", {"epoch_seconds_extrapolated": full_epoch,
                          "targets_per_s": f["targets"] / f["seconds"]},
         {"seconds": f["seconds"], "peak_rss_mb": f["peak_rss_mb"]},
         f"measured on {f['batches']} of {f['epoch_batches']} batches, epoch time extrapolated"),
        ("full-ranking evaluation", {"users_per_s": e["users"] / e["seconds"]},
         {"seconds": e["seconds"], "peak_rss_mb": e["peak_rss_mb"]},
         f"{e['users']} users x {args.items:,} items, chunks bounded by max_score_mb=512"),
    ]
    if not args.no_record:
        for variant, metrics, timing, note in records:
            append_record(BenchRecord(bench="million-items", dataset="synthetic zipf", model="sasrec", variant=variant,
                                      counts=counts, metrics=metrics, timing=timing, seed=args.seed, command=command,
                                      protocol={"hidden": 64, "max_len": 50, "batch_size": 256}, notes=note))
        write_markdown()


if __name__ == "__main__":
    main()
