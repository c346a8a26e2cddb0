"""Ingest and sequence-building speed on synthetic events from Parquet.

    python benchmarks/bench_ingest.py --events 10000000

Generates the synthetic shop at the scale that gives about ``--events`` events (cached under
``--data``), merges it into one Parquet file, then runs each stage in a fresh child process so that
its time and peak RSS are its own: (1) ingest into an empty store (read, clean, de-duplicate,
pseudonymise, commit), (2) build the per-user sequences from the store. Appends one record per
stage to benchmarks/results.jsonl and rewrites BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from shopseq.benchmarking import BenchRecord, append_record, write_markdown
from shopseq.synthetic import SyntheticShopConfig, generate_to_parquet


def prepare(events: int, data: Path, seed: int, items: int | None = None) -> Path:
    tag = f"{events}-seed{seed}" + (f"-items{items}" if items else "")
    merged = data / f"events-{tag}.parquet"
    if merged.exists():
        return merged
    parts = data / f"parts-{tag}"
    shutil.rmtree(parts, ignore_errors=True)
    config = SyntheticShopConfig.for_events(events, seed=seed)
    if items:  # the catalogue grows with sqrt(scale): pick the base size that lands on ``items``
        config = SyntheticShopConfig.for_events(events, seed=seed, n_items=max(2, round(items / config.scale ** 0.5)))
    started = time.perf_counter()
    generate_to_parquet(config, parts)
    print(f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_parquet('{parts}/events*.parquet')) TO '{merged}' (FORMAT parquet)")
    shutil.rmtree(parts)
    return merged


def child_ingest(src: Path, workspace: Path) -> dict:
    from shopseq.benchmarking import peak_rss_mb
    from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
    from shopseq.data.ingest import ingest_file
    from shopseq.data.store import EventStore
    from shopseq.data.workspace import Workspace

    shutil.rmtree(workspace, ignore_errors=True)
    with EventStore.open(Workspace(workspace)) as store:
        started = time.perf_counter()
        report = ingest_file(store, src, "parquet", SYNTHETIC_OPTIONS)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows_in": report.rows_in, "accepted": report.accepted,
            "users": report.users, "items": report.items, "rejected": report.rejected_total,
            "duplicates": report.duplicates, "peak_rss_mb": peak_rss_mb()}


def child_encode(workspace: Path) -> dict:
    from shopseq.benchmarking import peak_rss_mb
    from shopseq.data.sequences import build_sequences
    from shopseq.data.store import EventStore
    from shopseq.data.workspace import Workspace

    with EventStore.open(Workspace(workspace), read_only=True) as store:
        started = time.perf_counter()
        seqs = build_sequences(store.con)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "users": seqs.n_users, "items": seqs.n_items, "events": seqs.n_events,
            "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="approximate number of events")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, default=None, help="catalogue size (default: the shop's own scaling)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/shopseq-bench"), help="scratch folder")
    parser.add_argument("--child", choices=["ingest", "encode"], help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workspace = args.data / "workspace"
    if args.child == "ingest":
        print(json.dumps(child_ingest(args.src, workspace)))
        return
    if args.child == "encode":
        print(json.dumps(child_encode(workspace)))
        return

    args.data.mkdir(parents=True, exist_ok=True)
    src = prepare(args.events, args.data, args.seed, args.items)
    ing = run_child("--child", "ingest", "--src", str(src), "--data", str(args.data))
    enc = run_child("--child", "encode", "--data", str(args.data))
    command = f"python benchmarks/bench_ingest.py --events {args.events} --seed {args.seed}" + (
        f" --items {args.items}" if args.items else "")
    protocol = {"source": "synthetic shop, one Parquet file", "stages": "fresh child process per stage"}
    append_record(BenchRecord(
        bench="ingest", dataset="synthetic", variant="parquet -> store",
        counts={"rows": ing["rows_in"], "users": ing["users"], "items": ing["items"], "accepted": ing["accepted"]},
        metrics={"events_per_s": ing["rows_in"] / ing["seconds"]},
        timing={"seconds": ing["seconds"], "peak_rss_mb": ing["peak_rss_mb"]},
        protocol=protocol, seed=args.seed, command=command,
        notes="read + clean + de-duplicate + pseudonymise (HMAC-SHA256) + transactional insert into DuckDB",
    ))
    append_record(BenchRecord(
        bench="encode", dataset="synthetic", variant="store -> jagged sequences",
        counts={"events": enc["events"], "users": enc["users"], "items": enc["items"]},
        metrics={"events_per_s": enc["events"] / enc["seconds"]},
        timing={"seconds": enc["seconds"], "peak_rss_mb": enc["peak_rss_mb"]},
        protocol=protocol, seed=args.seed, command=command,
    ))
    write_markdown()
    print(json.dumps({"ingest": ing, "encode": enc}, indent=2))


if __name__ == "__main__":
    main()
