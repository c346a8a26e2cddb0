"""Load test of `shopseq serve`: POST /recommend latency and throughput at 1, 8 and 32 clients.

    python benchmarks/bench_serve.py                 # 100k-item synthetic shop, ~20 s per level
    python benchmarks/bench_serve.py --quick         # tiny shop, ~3 s per level: checks the script
    python benchmarks/bench_serve.py --run RUN_DIR --workspace WS   # an existing run

Generates the synthetic shop (cached under ``--data``), ingests it, trains SASRec (or takes
``--run``), starts the service in a subprocess on loopback (store read-only, one torch thread),
then for each concurrency level runs a closed-loop load test from a second process: N clients,
each sending its next request when the last one is answered, stored users picked at random.
Reports throughput, p50/p95/p99 latency measured by the client, errors (non-200 answers) and lost
requests (no answer: timeouts, refused connections). Goal: p99 <= 15 ms at >= 300 req/s.

Full runs append one record per level to benchmarks/results.jsonl and rewrite BENCHMARKS.md;
--quick runs write their records under --data only, so the checked-in numbers stay full runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GOAL = {"p99_ms": 15.0, "req_per_s": 300.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- data and model ---------------------------------------------------------------------------
def prepare(args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """(run dir, workspace, counts): the given run, or a synthetic shop + SASRec trained on it."""
    if args.run:
        return args.run, args.workspace, {}
    import pyarrow.parquet as pq

    from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
    from shopseq.data.ingest import ingest_file
    from shopseq.data.sequences import build_sequences
    from shopseq.data.store import EventStore, upsert_items
    from shopseq.data.workspace import Workspace
    from shopseq.runs.experiment import ExperimentConfig, SplitConfig, run_experiment
    from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

    tag = f"items{args.items}-users{args.users}-h{args.hidden}-e{args.epochs}-seed{args.seed}"
    root = args.data / tag
    ws, run = Workspace(root / "workspace"), root / "run"
    if not (run / "config.json").exists():
        started = time.perf_counter()
        shop = generate_shop(SyntheticShopConfig(n_users=args.users, n_items=args.items, seed=args.seed))
        write_shop(shop, root / "shop")
        with EventStore.open(ws) as store:
            ingest_file(store, root / "shop" / "events.parquet", "parquet", SYNTHETIC_OPTIONS)
            upsert_items(store, pq.read_table(root / "shop" / "items.parquet"))
            seqs = build_sequences(store.con)
        print(f"shop: {seqs.n_users:,} users, {seqs.n_items:,} items, {seqs.n_events:,} events "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
        model = {"model": "sasrec", "hidden": args.hidden, "max_len": 50,
                 "train": {"epochs": args.epochs, "threads": 1, "loss": "sampled", "patience": None}}
        config = ExperimentConfig(model=model, split=SplitConfig(method="time"), baselines=[], seed=args.seed)
        run_experiment(seqs, config, run, {"dataset": "synthetic", "tag": tag},
                       log=lambda *a: print(*a, file=sys.stderr))
    meta = json.loads((run / "config.json").read_text())
    return run, ws.root, {k: v for k, v in meta.get("split", {}).items() if isinstance(v, int)}


# -- the service --------------------------------------------------------------------------------
def start_service(run: Path, workspace: Path, port: int, backend: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shopseq.cli.main", "serve", str(run), "--workspace", str(workspace),
           "--port", str(port), "--read-only", "--backend", backend, "--threads", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **SERVE_ENV})
    return proc


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with code {proc.returncode} before it was ready")
        try:
            return httpx.get(f"{url}/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.25)
    raise RuntimeError(f"the service was not ready within {timeout:.0f} s")


# -- the load generator (runs in its own process) ----------------------------------------------------
class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a few microseconds of CPU per
    request, so the load generator measures the service, not its own HTTP library."""

    def __init__(self, host: str, port: int, headers: str = "") -> None:
        self.host, self.port = host, port
        self.headers = headers  # extra header lines, each ending in \r\n (e.g. an API key)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, response body) of one JSON POST on the kept-alive connection."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"{self.headers}Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:  # not what uvicorn sends for JSON; drop the connection to stay in sync
            await self.close()
            return status, b""
        return status, await self.reader.readexactly(length)

    async def post_json(self, path: str, body: bytes) -> int:
        return (await self.post(path, body))[0]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _load(url: str, users: list[str], clients: int, seconds: float, warmup: float, k: int,
                timeout: float = 5.0) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "lost": 0, "sent": 0}
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = Connection(host, int(port))
        while (now := time.perf_counter()) < stop:
            body = json.dumps({"user_pseudonym": rng.choice(users), "k": k}).encode()
            recorded = now >= measure_from
            counts["sent"] += recorded
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.post_json("/recommend", body), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                counts["lost"] += recorded
                await conn.close()
                continue
            if recorded:
                latencies.append(time.perf_counter() - t0)
                counts["ok" if status == 200 else "errors"] += 1
        await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"latencies": latencies, **counts, "seconds": seconds}


def child_load(args: argparse.Namespace) -> dict:
    import numpy as np

    users = json.loads(Path(args.users_file).read_text())
    out = asyncio.run(_load(args.url, users, args.clients, args.seconds, args.warmup, args.k))
    lat = np.array(out.pop("latencies")) * 1000
    pct = {f"p{q}_ms": float(np.percentile(lat, q)) if len(lat) else float("nan") for q in (50, 95, 99)}
    return {**out, **pct, "req_per_s": out["ok"] / out["seconds"], "max_ms": float(lat.max()) if len(lat) else 0.0}


def run_level(url: str, users_file: Path, clients: int, seconds: float, warmup: float, k: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--url", url, "--users-file", str(users_file),
           "--clients", str(clients), "--seconds", str(seconds), "--warmup", str(warmup), "--k", str(k)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **SERVE_ENV})
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shop, ~3 s per level (checks the script)")
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size of the synthetic shop")
    parser.add_argument("--users", type=int, default=50_000, help="shoppers in the synthetic shop")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="an existing run directory (skips data and training)")
    parser.add_argument("--workspace", type=Path, help="the workspace of --run")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--data", type=Path, default=Path("/tmp/shopseq-bench-serve"), help="scratch folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--users-file", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_load(args)))
        return
    if args.run and not args.workspace:
        parser.error("--run needs --workspace")
    if args.quick:
        args.items, args.users, args.hidden, args.epochs = 2_000, 1_500, 32, 1
        args.seconds, args.warmup = 3.0, 0.5

    import httpx

    from shopseq.benchmarking import BenchRecord, append_record, write_markdown

    args.data.mkdir(parents=True, exist_ok=True)
    run, workspace, split_counts = prepare(args)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = args.data / "serve.log"
    started = time.perf_counter()
    proc = start_service(run, workspace, port, args.backend, log)
    results: list[dict] = []
    try:
        health = wait_healthy(url, proc, timeout=600)
        startup_s = time.perf_counter() - started
        users = httpx.get(f"{url}/users/sample", params={"n": 200}).json()["users"]
        users_file = args.data / "users.json"
        users_file.write_text(json.dumps(users))
        for clients in [int(c) for c in args.concurrency.split(",") if c]:
            level = run_level(url, users_file, clients, args.seconds, args.warmup, args.k)
            level["clients"] = clients
            results.append(level)
            print(f"{clients:>3} clients: {level['req_per_s']:8.1f} req/s  p50 {level['p50_ms']:6.2f} ms  "
                  f"p95 {level['p95_ms']:6.2f} ms  p99 {level['p99_ms']:6.2f} ms  errors {level['errors']}  "
                  f"lost {level['lost']}", file=sys.stderr)
        metrics_text = httpx.get(f"{url}/metrics").text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    served = [line for line in metrics_text.splitlines() if 'route="/recommend",status="200"' in line]
    results_path = args.data / "results.jsonl" if args.quick else None
    for level in results:
        record = BenchRecord(
            bench="serve", dataset="synthetic" + (" (quick)" if args.quick else ""), model=health["model"],
            variant=f"{args.backend}, {level['clients']} clients",
            counts={"items": int(health["items"]), "users": int(health["users"]), "clients": level["clients"],
                    "requests": level["sent"], "errors": level["errors"], "lost": level["lost"]},
            metrics={"req_per_s": level["req_per_s"], "p50_ms": level["p50_ms"], "p95_ms": level["p95_ms"],
                     "p99_ms": level["p99_ms"]},
            timing={"seconds": level["seconds"], "startup_s": startup_s},
            protocol={"endpoint": f"POST /recommend by stored user, k={args.k}, seen items filtered",
                      "load": "closed loop, client in a separate process, loopback", "goal": GOAL,
                      "server": "uvicorn, 1 worker, 1 torch thread, store read-only"},
            seed=args.seed, notes=None if args.run else f"SASRec hidden {args.hidden}, {args.epochs} epochs",
        )
        if results_path is None:
            append_record(record)
        else:
            append_record(record, results_path)
    if results_path is None:
        write_markdown()
    summary = {"run": str(run), "startup_s": startup_s, "levels": results, "server_counts": served,
               "records": str(results_path or "benchmarks/results.jsonl"), **split_counts}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
