"""Load with a fault: 32 clients mix POST /recommend and POST /events against `shopseq serve` while
the service is killed (SIGKILL) and restarted once; afterwards every event the service acknowledged
must be in the store.

    python benchmarks/bench_reliability.py                       # ~60 s of load, 32 clients
    python benchmarks/bench_reliability.py --quick --no-record   # tiny shop, ~8 s of load: checks the script

The shop and model come from bench_serve's ``prepare`` (cached under ``--data``); each run works on
a fresh copy of that workspace, so runs do not see each other's events. The service runs in a
subprocess on loopback with an API key; the load generator is bench_serve's keep-alive client (a
few microseconds per request) in this process. Each /events request carries one event with a
timestamp unique to its client, so the store check afterwards is exact: acknowledged = the service
answered 200 with ``accepted == 1``; lost = acknowledged and not in the store (must be 0).
Errors are non-200 answers plus requests that got no answer (the restart window included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import SERVE_ENV, Connection, free_port, prepare, wait_healthy

API_KEY = "bench-reliability-key-0123456789"


def start_service(run: Path, workspace: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shopseq.cli.main", "serve", str(run), "--workspace", str(workspace),
           "--port", str(port), "--threads", "1"]
    env = {**os.environ, **SERVE_ENV, "SHOPSEQ_API_KEY": API_KEY}
    with open(log, "a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


async def load(url: str, users: list[str], items: list[str], clients: int, seconds: float, events_share: float,
               tag: str, restart: dict) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stop = time.perf_counter() + seconds
    base_ms = int(time.time() * 1000) - 3_600_000  # an hour ago: valid, and unique per client below
    stats = {"recommend": {"ok": 0, "errors": 0, "lat": []}, "events": {"ok": 0, "errors": 0, "lat": []}}
    acknowledged: list[tuple[str, int]] = []
    error_times: list[float] = []
    unanswered = 0

    async def client(c: int) -> None:
        nonlocal unanswered
        rng = random.Random(c)
        conn = Connection(host, int(port), headers=f"X-API-Key: {API_KEY}\r\n")
        n = 0
        user = f"reliability-{tag}-client-{c}"
        while time.perf_counter() < stop:
            if rng.random() < events_share:
                kind, path = "events", "/events"
                ts = base_ms + c * 1_000_000 + n
                n += 1
                body = {"user_id": user, "events": [{"item_id": rng.choice(items), "event_type": "view",
                                                     "timestamp": ts}]}
            else:
                kind, path, ts = "recommend", "/recommend", None
                body = {"user_pseudonym": rng.choice(users), "k": 10}
            t0 = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(conn.post(path, json.dumps(body).encode()), 10.0)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                stats[kind]["errors"] += 1
                error_times.append(time.perf_counter())
                unanswered += 1
                await conn.close()
                await asyncio.sleep(0.05)  # the service is down: retry soon, not in a hot loop
                continue
            if status != 200:
                stats[kind]["errors"] += 1
                error_times.append(time.perf_counter())
                continue
            stats[kind]["ok"] += 1
            stats[kind]["lat"].append(time.perf_counter() - t0)
            if kind == "events" and json.loads(answer)["accepted"] == 1:
                acknowledged.append((user, ts))  # type: ignore[arg-type]
        await conn.close()

    async def fault() -> None:
        await asyncio.sleep(restart["at"])
        await asyncio.to_thread(restart["do"])

    await asyncio.gather(fault(), *(client(c) for c in range(clients)))
    return {"stats": stats, "acknowledged": acknowledged, "unanswered": unanswered, "error_times": error_times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shop, ~8 s of load (checks the script)")
    parser.add_argument("--no-record", action="store_true", help="print the results only")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--events-share", type=float, default=0.3, help="share of requests that are POST /events")
    parser.add_argument("--restart-at", type=float, default=0.4, help="kill + restart at this fraction of the run")
    parser.add_argument("--signal", choices=["kill", "term"], default="kill", help="how the service is stopped")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("/tmp/shopseq-bench-reliability"), help="scratch folder")
    args = parser.parse_args()
    args.run = args.workspace = None
    if args.quick:
        args.items, args.users, args.hidden, args.seconds = 300, 400, 16, 8.0
    import httpx
    import numpy as np

    from shopseq.benchmarking import BenchRecord, append_record, write_markdown
    from shopseq.data.store import EventStore
    from shopseq.data.workspace import Workspace

    args.data.mkdir(parents=True, exist_ok=True)
    run, prepared_ws, _ = prepare(args)
    scratch = args.data / f"run-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(prepared_ws, scratch / "workspace")  # a fresh store: no events from earlier runs
    workspace = scratch / "workspace"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = scratch / "serve.log"
    procs = [start_service(run, workspace, port, log)]
    health = wait_healthy(url, procs[0], timeout=600)
    users = httpx.get(f"{url}/users/sample", params={"n": 200}).json()["users"]
    items = [i["item_id"] for i in httpx.post(f"{url}/recommend", json={"user_pseudonym": users[0], "k": 50,
                                                                          "filter_seen": False}).json()["items"]]
    timing: dict[str, float] = {}
    window: dict[str, float] = {}  # perf_counter times of the kill and of the restarted service's first health

    def restart() -> None:
        t0 = window["from"] = time.perf_counter()
        old = procs[-1]
        old.send_signal(signal.SIGKILL if args.signal == "kill" else signal.SIGTERM)
        old.wait(timeout=60)
        procs.append(start_service(run, workspace, port, log))
        wait_healthy(url, procs[-1], timeout=600)
        window["to"] = time.perf_counter()
        timing["downtime_s"] = window["to"] - t0

    tag = f"{os.getpid()}-{int(time.time())}"
    started = time.perf_counter()
    out = asyncio.run(load(url, users, items, args.clients, args.seconds, args.events_share, tag,
                           {"at": args.seconds * args.restart_at, "do": restart}))
    wall = time.perf_counter() - started
    procs[-1].terminate()
    procs[-1].wait(timeout=60)

    # every acknowledged event must be in the store
    acked = out["acknowledged"]
    with EventStore.open(Workspace(workspace), read_only=True) as store:
        pseudonyms = {u: store.key.pseudonymise(u) for u in {u for u, _ in acked}}
        stored = set(store.con.execute(
            "SELECT user_id, timestamp FROM events WHERE user_id IN (SELECT unnest(?))",
            [list(pseudonyms.values())]).fetchall())
    lost = [(u, ts) for u, ts in acked if (pseudonyms[u], ts) not in stored]
    stats = out["stats"]
    total = sum(s["ok"] + s["errors"] for s in stats.values())
    errors = sum(s["errors"] for s in stats.values())
    # errors while the service was down are the fault's cost; any outside that window are failures
    in_window = sum(window.get("from", 0) <= t <= window.get("to", 0) + 1.0 for t in out["error_times"])
    lat = {k: np.array(s["lat"]) * 1000 for k, s in stats.items()}
    metrics = {"error_rate": errors / max(total, 1), "error_rate_outside_restart": (errors - in_window) / max(total, 1),
               "req_per_s": (total - errors) / wall,
               **{f"p{q}_{k}_ms": float(np.percentile(v, q)) if len(v) else float("nan")
                  for k, v in lat.items() for q in (50, 99)}}
    summary = {"requests": total, "errors": errors, "errors_during_restart": in_window,
               "unanswered": out["unanswered"], "acknowledged_events": len(acked),
               "stored_events_checked": len(acked) - len(lost), "lost_events": len(lost), **metrics, **timing,
               "wall_s": wall, "clients": args.clients, "items": int(health["items"]), "users": int(health["users"]),
               "restart_signal": args.signal}
    print(json.dumps(summary, indent=2))
    if not args.no_record:
        record = BenchRecord(
            bench="reliability", dataset="synthetic" + (" (quick)" if args.quick else ""), model=health["model"],
            variant=f"{args.clients} clients, {args.events_share:.0%} /events, 1 restart ({args.signal})",
            counts={"requests": total, "errors": errors, "errors_during_restart": in_window,
                    "acknowledged_events": len(acked), "lost_events": len(lost),
                    "items": int(health["items"]), "users": int(health["users"])},
            metrics=metrics, timing={"seconds": args.seconds, **timing},
            protocol={"load": "closed loop, keep-alive loopback clients", "fault": f"SIG{args.signal.upper()} + "
                      "restart of the service mid-run", "check": "every acknowledged event is in the store"},
            seed=args.seed)
        if args.quick:
            append_record(record, args.data / "results.jsonl")
        else:
            append_record(record)
            write_markdown()
    shutil.rmtree(scratch, ignore_errors=True)
    if lost:
        print(f"LOST {len(lost)} acknowledged events, e.g. {lost[:3]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
