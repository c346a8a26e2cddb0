"""Raw user ids never leave the ingest: after ingest -> encode -> train -> profile -> export -> a
served session (events, recommendations, explanations, profiles and a forget, with the access log
on), no file in the workspace, the run directory or the server's log holds a raw id. And forgetting
a user reaches the store, the sequence cache, the profiles and a running service's memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from helpers.served_run import served_copy

from shopseq.applications.profiles import Profiles
from shopseq.cli.main import app as cli_app
from shopseq.data.sequences import SequenceCache
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace
from shopseq.serving.app import create_app
from shopseq.serving.state import ServiceConfig, ServiceState
from shopseq.synthetic import SyntheticShopConfig, generate_shop

torch.set_num_threads(1)
KEY = "privacy-key-0123456789abcdef"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_holding(root: Path, needles: list[str], skip: set[Path]) -> list[str]:
    """Every file under ``root`` (not in ``skip``) whose bytes contain a needle, raw or URL-encoded."""
    patterns = {n.encode() for n in needles} | {quote(n, safe="").encode() for n in needles}
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        data = path.read_bytes()
        hits = [p.decode() for p in patterns if p in data]
        if hits:
            found.append(f"{path.relative_to(root)}: {hits[:3]}")
    return found


def test_raw_user_ids_appear_in_no_artifact_and_no_log(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:10]
    shop = generate_shop(SyntheticShopConfig(n_users=120, n_items=50, n_categories=4, days=20, seed=7))
    originals = sorted(set(shop.events.column("user_id").to_pylist()))
    raw = {u: f"shopper.{token}.{i}@example.com" for i, u in enumerate(originals)}
    events = shop.events.set_column(shop.events.schema.get_field_index("user_id"), "user_id",
                                    pa.array([raw[u] for u in shop.events.column("user_id").to_pylist()]))
    src = tmp_path / "source"
    src.mkdir()
    pq.write_table(events, src / "events.parquet")
    raw_ids = list(raw.values())
    newcomer = f"newcomer.{token}@example.com"
    (src / "more.csv").write_text(f"user,item,ts\n{raw_ids[0]},i-x,not-a-time\n{raw_ids[1]},,1700000000\n")
    ws = tmp_path / "ws"
    run = tmp_path / "runs" / "sasrec"
    w = ["--workspace", str(ws)]

    cli("ingest", str(src / "events.parquet"), "--format", "parquet", "--timestamp-unit", "ms",
        "--map", "session_id=session_id", "--map", "category=category", *w)
    cli("ingest", str(src / "more.csv"), "--map", "user_id=user", "--map", "item_id=item", "--map", "timestamp=ts",
        "--map", "event_type=", *w)
    cli("encode", *w)
    cli("train", "-m", "sasrec", "--split", "loo", "--baselines", "pop", "-s", "hidden=16", "-s", "max_len=20",
        "-s", "layers=1", "-s", "heads=2", "-s", "train.epochs=1", "-s", "train.threads=1", "--out", str(run), *w)
    cli("profile", str(run), "--k", "2", *w)
    cli("export", str(ws / "exports" / "all.parquet"), *w)

    key_file = tmp_path / "api.key"
    key_file.write_text(KEY)
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shopseq.cli.main", "serve", str(run), "--port", str(port),
                                 "--access-log", "--api-key-file", str(key_file), *w],
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        h = {"X-API-Key": KEY}
        with httpx.Client(base_url=url, timeout=30) as c:
            item = c.post("/recommend", json={"user_id": raw_ids[2], "k": 3}).json()["items"][0]["item_id"]
            posted = c.post("/events", headers=h, json={"user_id": newcomer, "events": [
                {"item_id": item, "event_type": "cart"}, {"item_id": item, "timestamp": "soon"}]})
            assert posted.status_code == 200 and posted.json()["accepted"] == 1
            assert c.post("/events", headers=h, json={"user_id": raw_ids[3], "events": [{"item_id": item}]}
                          ).status_code == 200
            rec = c.post("/recommend", json={"user_id": newcomer, "k": 5, "include_history": True})
            assert rec.status_code == 200 and rec.json()["known_user"]
            assert c.post("/explain", json={"user_id": raw_ids[2], "k": 2}).status_code == 200
            assert c.get(f"/users/{quote(raw_ids[2], safe='')}/profile").status_code == 200
            assert c.get(f"/users/{quote(newcomer, safe='')}/profile").status_code == 404
            assert c.post("/events", json={"user_id": raw_ids[4], "events": [{"item_id": item}]}).status_code == 401
            gone = c.delete(f"/users/{quote(raw_ids[5], safe='')}", headers=h)
            assert gone.status_code == 200 and gone.json()["events_deleted"] > 0
            assert c.post("/recommend", json={"user_id": raw_ids[6], "k": 2000}).status_code == 422
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    log_text = log.read_text()
    assert "GET /users/<redacted>/profile" in log_text and "DELETE /users/<redacted>" in log_text  # it did log
    skip = {src / "events.parquet", src / "more.csv", key_file}
    leaks = files_holding(tmp_path, [*raw_ids, newcomer], skip)
    assert not leaks, leaks
    checked = [p for p in tmp_path.rglob("*") if p.is_file() and p not in skip]
    names = {str(p.relative_to(tmp_path)) for p in checked}
    expected = {"serve.log", "ws/store.duckdb", "ws/exports/all.parquet", "ws/rejects/batch-00002.csv",
                "ws/apps/sasrec/profiles.parquet", "ws/apps/sasrec/segments.html", "runs/sasrec/vocab/users.parquet",
                "runs/sasrec/metrics.json", "runs/sasrec/report.html", "runs/sasrec/model/model.safetensors"}
    assert expected <= names, expected - names  # the grep really read the artifacts that matter


def test_unparsable_lines_keep_only_a_pseudonymised_user_id(tmp_path: Path) -> None:
    raw = f"leaky.{uuid.uuid4().hex[:8]}@example.com"
    src = tmp_path / "e.csv"
    src.write_text(f"user,item,ts\nok-user,i1,1700000000\n{raw},i2,1700000001,extra,columns\n")
    ws = tmp_path / "ws"
    cli("ingest", str(src), "--map", "user_id=user", "--map", "item_id=item", "--map", "timestamp=ts",
        "--map", "event_type=", "--workspace", str(ws))
    assert not files_holding(ws, [raw], set())
    with EventStore.open(Workspace(ws), read_only=True) as store:
        kept = store.con.execute("SELECT src_row, reason, raw FROM rejects").fetchall()
        pseudonym = store.key.pseudonymise(raw)
    # the line is still there to inspect, with the user id replaced by its pseudonym
    assert kept == [(3, "too_many_columns", f"{pseudonym},i2,1700000001,extra,columns")]


def test_forget_reaches_the_store_caches_profiles_and_a_running_service(tmp_path: Path) -> None:
    run, ws, users, _ = served_copy(tmp_path)
    victim, other = users[3], users[4]
    with EventStore.open(ws) as store:
        pv, po = store.key.pseudonymise(victim), store.key.pseudonymise(other)
        cache = SequenceCache(ws.cache_dir / "sequences")
        cache.get_or_build(store.con, store.cache_key)
        cached = cache.path_for(store.cache_key)
        assert cached.is_dir()
    table = pa.table({"user_id": [pv, po], "segment": [0, 1], "vector": [[0.1, 0.2], [0.3, 0.4]]})
    profiles_path = ws.root / "apps" / run.name / "profiles.parquet"
    Profiles(table, {"segments": [{"segment": 0, "description": "a"}, {"segment": 1, "description": "b"}]}).save(
        profiles_path)
    state = ServiceState.open(run, ws, ServiceConfig(api_key=KEY))
    try:
        with TestClient(create_app(state)) as c:
            assert c.post("/recommend", json={"user_id": victim, "k": 3}).json()["known_user"]
            assert c.get(f"/users/{victim}/profile").status_code == 200
            n_before = state.store.count()
            r = c.delete(f"/users/{victim}", headers={"X-API-Key": KEY})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["user_pseudonym"] == pv and body["events_deleted"] > 0 and body["profile_removed"]
            assert state.store.count() == n_before - body["events_deleted"]
            # the service's memory: no history, no profile, not sampled
            after = c.post("/recommend", json={"user_id": victim, "k": 3, "include_history": True}).json()
            assert not after["known_user"] and after["cold_start"] and after["history"] == []
            assert c.get(f"/users/{victim}/profile").status_code == 404
            assert pv not in c.get("/users/sample", params={"n": 200}).json()["users"]
            assert c.get(f"/users/{other}/profile").status_code == 200  # others untouched
            assert c.post("/recommend", json={"user_id": other, "k": 3}).json()["known_user"]
            # the user may come back: new events are a fresh history
            again = c.post("/events", headers={"X-API-Key": KEY}, json={"user_id": victim, "events": [
                {"item_id": c.post("/recommend", json={"user_id": other, "k": 1}).json()["items"][0]["item_id"]}]})
            assert again.json()["history_length"] == 1
            assert c.delete(f"/users/{victim}", headers={"X-API-Key": KEY}).json()["events_deleted"] == 1
    finally:
        state.close()
    # on disk: the store, the sequence cache and the profiles file
    with EventStore.open(ws, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM events WHERE user_id = ?", [pv]).fetchone()[0] == 0
        assert store.con.execute("SELECT count(*) FROM events WHERE user_id = ?", [po]).fetchone()[0] > 0
    assert not cached.exists()
    kept = pq.read_table(profiles_path)
    assert kept.column("user_id").to_pylist() == [po]
    assert Profiles.load(profiles_path).segment_descriptions() == {0: "a", 1: "b"}  # metadata kept


def test_cli_forget_cleans_the_derived_files(tmp_path: Path) -> None:
    run, ws, users, _ = served_copy(tmp_path)
    victim = users[7]
    with EventStore.open(ws) as store:
        pv = store.key.pseudonymise(victim)
        SequenceCache(ws.cache_dir / "sequences").get_or_build(store.con, store.cache_key)
    targets = ws.root / "apps" / run.name / "targets.parquet"  # any app output with user ids
    targets.parent.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": [pv, "someone-else"], "score": [0.9, 0.1]}), targets)
    out = cli("forget", victim, "--workspace", str(ws.root))
    assert "deleted 4 events" in out or "deleted" in out
    assert "targets.parquet" in out.replace("\n", "")
    assert pc.sum(pc.equal(pq.read_table(targets).column("user_id"), pv)).as_py() in (None, 0)
    assert pq.read_table(targets).num_rows == 1
    assert not any(p.is_dir() for p in (ws.cache_dir / "sequences").iterdir())
