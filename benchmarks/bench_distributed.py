"""1 process against 2 (torchrun, gloo) on this machine: SASRec on Amazon Beauty.

    python benchmarks/bench_distributed.py --epochs 30

The same model, global batch (128 users), seed and epoch budget (a cosine schedule over
``--epochs``, no early stopping, so both runs do the same number of steps), once as a single
process with ``--threads`` threads per process x 1, once under ``torchrun --nproc_per_node 2``
with the cores split between the ranks. Each rank loads the data itself (its own scratch store);
rank 0 evaluates. Protocol of ``bench_amazon``: leave-one-out, full ranking, seen items filtered.
Records seconds per epoch (training only), test NDCG@10 / HR@10 and peak memory per process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shopseq.benchmarking import BenchRecord, append_record, peak_rss_mb, write_markdown

HERE = Path(__file__).resolve().parent


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from bench_amazon import load

    from shopseq.data.splits import LeaveOneOutSplit
    from shopseq.evaluation import EvalConfig, evaluate
    from shopseq.models.registry import build_model
    from shopseq.runs.experiment import model_from_dict
    from shopseq.training.distributed import init_from_env

    ctx = init_from_env()
    loaded = load("beauty", args.scratch / f"rank{ctx.rank}")
    if loaded is None:
        sys.exit(1)
    seqs, _ = loaded
    split = LeaveOneOutSplit().split(seqs)
    spec = {"model": "sasrec", "attn_dropout": 0.0,
            "train": {"epochs": args.epochs, "patience": None, "threads": args.threads, "quiet": True}}
    model = build_model(model_from_dict(spec, 0), seqs.n_items)
    started = time.perf_counter()
    model.fit(split.train)  # no validation: the same steps in both runs
    train_seconds = time.perf_counter() - started
    out = {"rank": ctx.rank, "world": ctx.world_size, "train_seconds": train_seconds,
           "epoch_seconds": [r["seconds"] for r in model.history], "peak_rss_mb": peak_rss_mb()}
    if ctx.is_main:
        test = evaluate(model, split.test, EvalConfig(ks=(10,), filter_seen=True))
        out |= {"ndcg@10": test.metrics["ndcg@10"], "hr@10": test.metrics["hr@10"],
                "users": seqs.n_users, "items": seqs.n_items, "events": seqs.n_events,
                "test_users": split.test.n_users}
    print("RESULT " + json.dumps(out), flush=True)


def launch(cmd: list[str], env: dict[str, str]) -> list[dict]:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)  # set per run below
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shopseq-bench/distributed"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    cores = os.cpu_count() or 1
    command = "python benchmarks/bench_distributed.py " + " ".join(sys.argv[1:])
    for n in args.procs:
        shutil.rmtree(args.scratch, ignore_errors=True)
        threads = max(cores // n, 1)
        base = [__file__, "--child", "--epochs", str(args.epochs), "--threads", str(threads),
                "--scratch", str(args.scratch)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, *base] if n == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *base]
        ranks = launch(cmd, env)
        main_rank = next(r for r in ranks if r["rank"] == 0)
        per_epoch = sum(main_rank["epoch_seconds"]) / len(main_rank["epoch_seconds"])
        record = BenchRecord(
            bench="distributed", dataset="beauty", model="sasrec", variant=f"{n} process(es) x {threads} thread(s)",
            counts={"users": main_rank["users"], "items": main_rank["items"], "interactions": main_rank["events"],
                    "processes": n},
            protocol={"split": "leave-one-out", "ranking": "full", "filter_seen": True, "global_batch_users": 128,
                      "schedule": f"cosine over {args.epochs} epochs, no early stopping",
                      "test_users": main_rank["test_users"]},
            metrics={"ndcg@10": round(main_rank["ndcg@10"], 5), "hr@10": round(main_rank["hr@10"], 5)},
            timing={"seconds_per_epoch": round(per_epoch, 2), "epochs": len(main_rank["epoch_seconds"]),
                    "train_seconds": round(main_rank["train_seconds"], 1),
                    "peak_rss_mb_per_process": round(max(r["peak_rss_mb"] for r in ranks))},
            seed=0, command=command,
        )
        print(json.dumps(record.model_dump(exclude_none=True)))
        if not args.no_record:
            append_record(record)
    if not args.no_record:
        write_markdown()


if __name__ == "__main__":
    main()
