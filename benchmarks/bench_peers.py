"""Side by side with RecBole 1.2.1: same data, same split, same protocol, one run on this machine.

    python benchmarks/bench_peers.py --datasets ml-100k beauty sports --models sasrec gru4rec

For every dataset the source is read once by shopseq and written as one RecBole atomic file
(per-user order fixed by an ordinal timestamp, so neither system can reorder ties); both systems
read that same file. For every model, ours and RecBole's run one after the other, each in its
own process (peak memory is per process), and the order alternates from model to model so that
machine drift hits both. Settings shared by both: hidden 64, 2 layers, 2 heads (SASRec), max
length 50, full cross-entropy, batch 256, leave-one-out, full ranking with seen items kept
(RecBole's sequential default), early stopping on validation NDCG@10 with patience 10, at most
100 epochs. The run fails if the two systems do not evaluate the same (user, target) pairs.

Per model and dataset it records test NDCG@10 / HR@10, seconds per epoch, the wall-clock seconds
each system needs to reach the peer's best validation NDCG@10, the full-ranking evaluation time
and peak memory, and the ratios ours / peer; and draws validation NDCG@10 against wall-clock time.
RecBole's virtualenv is made on first use by ``benchmarks/peers/setup_recbole.sh``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shopseq.benchmarking import PROJECT_ROOT, BenchRecord, append_record, write_markdown
from shopseq.data.formats.base import ReadOptions
from shopseq.data.ingest import ingest_file
from shopseq.data.sequences import build_sequences
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace

SHARED = Path(os.environ.get("SHOPSEQ_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
PEERS = PROJECT_ROOT / "benchmarks" / "peers"
# dataset -> (source file under ../shared/data, shopseq format); the atomic name must not be
# "ml-100k", which RecBole always redirects to its own bundled copy
SOURCES = {
    "ml-100k": ("ml-100k/u.data.gz", "movielens"),
    "beauty": ("amazon-s3rec/Beauty.txt.gz", "s3rec"),
    "sports": ("amazon-s3rec/Sports_and_Outdoors.txt.gz", "s3rec"),
    "toys": ("amazon-s3rec/Toys_and_Games.txt.gz", "s3rec"),
}
# peer -> (label, its setup script, our model -> its model name); a peer lacking a model is skipped
PEER_SYSTEMS = {
    "recbole": ("RecBole 1.2.1", "setup_recbole.sh", {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}),
    "rectools": ("RecTools 0.19.0", "setup_rectools.sh", {"sasrec": "SASRec"}),
}


def write_atomic(dataset: str, scratch: Path) -> Path | None:
    """``scratch/<name>/<name>.inter`` from the dataset's source, in shopseq's per-user order."""
    rel, fmt = SOURCES[dataset]
    src = SHARED / rel
    if not src.exists():
        print(f"skipping {dataset}: {src} is absent", file=sys.stderr)
        return None
    name = "peers-" + dataset.replace("-", "")
    folder = scratch / name
    inter = folder / f"{name}.inter"
    if inter.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peers-src-") as tmp, EventStore.open(Workspace(Path(tmp))) as store:
        ingest_file(store, src, fmt, ReadOptions())
        seqs = build_sequences(store.con)
    users = seqs.user_vocab.decode(np.repeat(np.arange(seqs.n_users), seqs.lengths()))
    items = seqs.item_vocab.decode(seqs.items)
    positions = seqs.positions() + 1  # ordinal seconds; 0 (the epoch) is rejected as impossible
    tmp_path = inter.with_suffix(".tmp")
    with open(tmp_path, "w") as f:  # ~1 s per million rows; written once per dataset
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{p}\n" for u, i, p in zip(users, items, positions, strict=True))
    os.replace(tmp_path, inter)
    return folder


def peer_python(peer: str) -> Path:
    """The peer's own interpreter, its virtualenv made on first use (pinned versions, ~2 min)."""
    venv = PEERS / f".venv-{peer}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {peer}'s virtualenv in {venv}", file=sys.stderr)
        subprocess.run(["bash", str(PEERS / PEER_SYSTEMS[peer][1]), str(venv)], check=True)
    return python


def peer_budget(specs: list[str], peer: str) -> float:
    """Seconds for ``peer`` from ``--peer-budget`` values: ``SECONDS`` for every peer, or ``PEER=SECONDS``."""
    budget = 0.0
    for spec in specs:
        name, _, value = spec.rpartition("=")
        if name in ("", peer):
            budget = float(value)
    return budget


def peer_command(peer: str, folder: Path, model: str, out: Path, args: argparse.Namespace) -> list[str]:
    name = PEER_SYSTEMS[peer][2][model]
    cmd = [str(peer_python(peer)), str(PEERS / f"{peer}_run.py"), str(folder), "--epochs", str(args.epochs),
           "--out", str(out)]
    if peer == "recbole":
        cmd += ["--models", name, "--workdir", str(out / "work")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    budget = peer_budget(args.peer_budget, peer)
    if budget:
        cmd += ["--time-budget", str(budget)]
    return cmd


def run_json(cmd: list[str], log: Path, reuse: bool) -> dict:
    """Run a driver; its last stdout line is its JSON result (kept beside ``log``), its stderr goes
    to ``log``. With ``reuse``, a result already there from the same command is read instead."""
    saved = log.with_suffix(".json")
    if reuse and saved.exists():
        result = json.loads(saved.read_text())
        if result.get("cmd") == cmd:
            print(f"reusing {saved}", file=sys.stderr)
            return result
    print(f"$ {' '.join(cmd)}", file=sys.stderr)
    started = time.perf_counter()
    with open(log, "w") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        sys.exit(f"{cmd[1]} failed (exit {done.returncode}); see {log}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    result["cmd"] = cmd
    saved.write_text(json.dumps(result))
    return result


def same_pairs(a: Path, b: Path) -> tuple[bool, int]:
    pa, pb = sorted(a.read_text().splitlines()), sorted(b.read_text().splitlines())
    return pa == pb, len(pa)


def wall_curve(res: dict) -> np.ndarray:
    """Seconds since training began at the end of each epoch's validation."""
    return np.cumsum(np.asarray(res["epoch_seconds"]) + np.asarray(res["valid_epoch_seconds"]))


def seconds_to_reach(res: dict, target: float) -> float | None:
    curve, wall = np.asarray(res["valid_curve"]), wall_curve(res)
    hit = np.flatnonzero(curve >= target - 1e-12)
    return round(float(wall[hit[0]]), 2) if len(hit) else None


def ratio(num: float | None, den: float | None) -> float | None:
    return None if not num or not den else round(num / den, 2)


def plot_curves(curves: dict[str, dict], dataset: str, model: str, tag: str = "") -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rel = f"benchmarks/plots/peers-{dataset}-{model}{tag}.png"
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, res in curves.items():
        ax.plot(wall_curve(res), res["valid_curve"], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock seconds of training + validation (log)")
    ax.set_ylabel("validation NDCG@10 (full ranking, seen kept)")
    ax.set_title(f"{model} on {dataset}: validation NDCG@10 against time")
    ax.legend()
    ax.grid(alpha=0.3)
    out = PROJECT_ROOT / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".tmp.png"), dpi=110)
    plt.close(fig)
    os.replace(out.with_suffix(".tmp.png"), out)
    return rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty", "sports"], choices=sorted(SOURCES))
    parser.add_argument("--models", nargs="+", default=["sasrec", "gru4rec"], choices=["sasrec", "gru4rec"])
    parser.add_argument("--peers", nargs="+", default=sorted(PEER_SYSTEMS), choices=sorted(PEER_SYSTEMS))
    parser.add_argument("--epochs", type=int, default=100, help="epoch cap for both systems")
    parser.add_argument("--peer-budget", nargs="+", default=[], metavar="[PEER=]SECONDS",
                        help="wall-clock seconds per peer training run, for all peers or one (e.g. recbole=3000 "
                             "rectools=1200; default none); it keeps its best "
                             "checkpoint so far, and the records say it was stopped by the budget")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of both systems (0 = torch's default, all cores)")
    parser.add_argument("--reuse", action="store_true",
                        help="read a peer's result from an earlier run of the same command instead of rerunning it "
                             "(shopseq always reruns)")
    parser.add_argument("--ours-set", default="", metavar="JSON",
                        help='overrides of our model config, e.g. \'{"train": {"window_stride": 5}}\' (a separate '
                             "run, labelled with them)")
    parser.add_argument("--only", choices=["ours", *sorted(PEER_SYSTEMS)],
                        help="run one side only and keep its result for a later --reuse (records nothing)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/shopseq-bench/peers"))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    command = "python benchmarks/bench_peers.py " + " ".join(sys.argv[1:])
    flip = False
    for dataset in args.datasets:
        folder = write_atomic(dataset, args.scratch / "atomic")
        if folder is None:
            continue
        for model in args.models:
            out = args.scratch / "runs" / f"{dataset}-{model}"
            ours_dir = "ours" + (f"-{hashlib.sha1(args.ours_set.encode()).hexdigest()[:8]}" if args.ours_set else "")
            ours_cmd = [sys.executable, str(PEERS / "shopseq_run.py"), str(folder), "--model", model,
                        "--out", str(out / ours_dir), "--epochs", str(args.epochs)]
            if args.threads:
                ours_cmd += ["--threads", str(args.threads)]
            if args.ours_set:
                ours_cmd += ["--set", args.ours_set]
            runs = [("ours", ours_cmd)] + [(peer, peer_command(peer, folder, model, out / peer, args))
                                           for peer in args.peers if model in PEER_SYSTEMS[peer][2]]
            runs = [(who, cmd) for who, cmd in runs if args.only in (None, who)]
            dirs = {who: ours_dir if who == "ours" else who for who, _ in runs}
            for d in dirs.values():
                (out / d).mkdir(parents=True, exist_ok=True)
            order = runs[::-1] if flip else runs
            # ours always reruns: its command does not change with our code, a peer's does with its pins
            results = {who: run_json(cmd, out / f"{dirs[who]}.log", args.reuse and who != "ours") for who, cmd in order}
            flip = not flip  # alternate who goes first, so drift of the machine hits every system
            if args.only:
                continue
            label = "shopseq" + (f" {args.ours_set}" if args.ours_set else "")
            record_runs(dataset, model, results, out / ours_dir, label, out, command, args.epochs, args.no_record)
    if not (args.no_record or args.only):
        write_markdown()


def record_runs(dataset: str, model: str, results: dict[str, dict], ours_dir: Path, ours_label: str, out: Path,
                command: str, epochs: int, no_record: bool) -> None:
    """Check every peer evaluated our (user, target) pairs; record each system and each ratio."""
    ours = results["ours"]
    peers = {who: res for who, res in results.items() if who != "ours"}
    checks: dict[str, int] = {}
    for who in peers:
        name = PEER_SYSTEMS[who][2][model]
        for part in ("valid", "test"):
            same, n = same_pairs(ours_dir / f"{model}.{part}.tsv", out / who / f"{name}.{part}.tsv")
            if not same:
                sys.exit(f"{dataset}/{model}: {who} evaluates other {part} (user, target) pairs than shopseq; "
                         f"compare {out}/ours and {out}/{who}")
            checks[f"{part}_pairs_identical"] = n
    protocol = {"split": "leave-one-out", "ranking": "full", "filter_seen": False, **checks,
                "early_stopping": "valid NDCG@10, patience 10", "epoch_cap": epochs}
    counts = {"users": ours["n_users"], "items": ours["n_items"], "interactions": ours["n_inters"]}
    labels = {"ours": ours_label, **{who: PEER_SYSTEMS[who][0] for who in peers}}
    plot = plot_curves({labels[who]: res for who, res in results.items()}, dataset, model, ours_dir.name[len("ours"):])
    records = []
    for who, res in results.items():
        test = res["test"]
        best_of = {f"seconds_to_{p}_best": seconds_to_reach(res, max(peers[p]["valid_curve"])) for p in peers}
        records.append(BenchRecord(
            bench="peers", dataset=dataset, model=model, variant=labels[who], counts=counts, protocol=protocol,
            metrics={"ndcg@10": test["ndcg@10"], "hr@10": test["recall@10"], "ndcg@20": test["ndcg@20"],
                     "hr@20": test["recall@20"], "best_valid_ndcg@10": max(res["valid_curve"])},
            timing={"seconds_per_epoch": res["sec_per_train_epoch"], "valid_eval_seconds": res["sec_per_valid_eval"],
                    "test_eval_seconds": res["test_eval_seconds"], "epochs": res["epochs_run"],
                    "best_epoch": res["best_epoch"], **best_of,
                    "train_wall_seconds": round(float(wall_curve(res)[-1]), 1), "peak_rss_mb": res["peak_rss_mb"]},
            seed=2020 if who == "recbole" else 0, command=command,
            notes=f"stopped by {res['stopped_by']}; {res.get('torch_threads')} torch threads",
        ))
    for who, peer in peers.items():
        peer_best = max(peer["valid_curve"])
        records.append(BenchRecord(
            bench="peers", dataset=dataset, model=model, variant=f"ratio {ours_label} / {who}", counts=counts,
            protocol=protocol,
            metrics={"ndcg@10": ratio(ours["test"]["ndcg@10"], peer["test"]["ndcg@10"]),
                     "hr@10": ratio(ours["test"]["recall@10"], peer["test"]["recall@10"])},
            timing={"epoch_speedup": ratio(peer["sec_per_train_epoch"], ours["sec_per_train_epoch"]),
                    "time_to_peer_best_speedup": ratio(seconds_to_reach(peer, peer_best),
                                                       seconds_to_reach(ours, peer_best)),
                    "test_eval_speedup": ratio(peer["test_eval_seconds"], ours["test_eval_seconds"]),
                    "valid_eval_speedup": ratio(peer["sec_per_valid_eval"], ours["sec_per_valid_eval"]),
                    "memory_ratio": ratio(ours["peak_rss_mb"], peer["peak_rss_mb"])},
            command=command, plots=[plot] if plot else None,
            notes=("speed-ups are peer seconds / ours (higher is better); memory_ratio is ours / peer (lower is "
                   "better); time_to_peer_best_speedup is n/a when shopseq never reached the peer's best "
                   f"validation NDCG@10 ({peer_best:.4f})"),
        ))
    for rec in records:
        print(json.dumps(rec.model_dump(exclude_none=True)))
        if not no_record:
            append_record(rec)

if __name__ == "__main__":
    main()
