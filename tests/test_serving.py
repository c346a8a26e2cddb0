"""The HTTP service over a small trained SASRec run: recommendations match the model on the same
history, posted events are cleaned like ingest, persisted and seen at once, explanations are the
real score drops, and bad requests get clear 4xx bodies (never a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
from shopseq.cli.main import app as cli_app
from shopseq.data.ingest import ingest_file
from shopseq.data.privacy import PseudonymKey
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.store import EventStore, upsert_items
from shopseq.data.workspace import Workspace
from shopseq.models.base import Histories, IncompatibleModelError, Recommender
from shopseq.runs.experiment import ExperimentConfig, SplitConfig, load_run, run_experiment
from shopseq.serving.app import create_app
from shopseq.serving.batching import MicroBatcher
from shopseq.serving.client import query_once, running_service
from shopseq.serving.explain import attention_probs, last_position_attention, leave_one_out_histories
from shopseq.serving.state import ServiceConfig, ServiceState
from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

torch.set_num_threads(1)
TINY_SASREC = {"model": "sasrec", "hidden": 16, "max_len": 20, "heads": 2, "layers": 2,
               "train": {"epochs": 2, "threads": 1, "batch_size": 64, "warmup_steps": 5}}


def make_served_run(root: Path, model: dict | None = None) -> tuple[Path, Workspace, list[str]]:
    """A small synthetic shop ingested into a workspace (with item attributes) and a tiny trained
    run; returns the run dir, the workspace and the shop's raw user ids."""
    shop = generate_shop(SyntheticShopConfig(n_users=300, n_items=120, n_categories=6, days=30, seed=5))
    write_shop(shop, root / "shop")
    ws = Workspace(root / "ws")
    with EventStore.open(ws) as store:
        ingest_file(store, root / "shop" / "events.parquet", "parquet", SYNTHETIC_OPTIONS)
        upsert_items(store, pq.read_table(root / "shop" / "items.parquet"))
        seqs = build_sequences(store.con)
    config = ExperimentConfig(model=model or TINY_SASREC, split=SplitConfig(method="loo"), baselines=[])
    run_experiment(seqs, config, root / "run", {}, log=lambda *_: None)
    return root / "run", ws, sorted(set(shop.events.column("user_id").to_pylist()))


@contextlib.contextmanager
def client_of_new_run(root: Path, model: dict) -> Iterator[tuple[TestClient, Recommender, Sequences, Workspace,
                                                                list[str]]]:
    """A service over a fresh run of ``model`` (see ``make_served_run``), with the loaded model,
    the store's sequences, the workspace and the raw user ids."""
    run, ws, users = make_served_run(root, model)
    loaded, _ = load_run(run)
    with EventStore.open(ws, read_only=True) as store:
        seqs = build_sequences(store.con)
    state = ServiceState.open(run, ws, ServiceConfig())
    try:
        with TestClient(create_app(state), raise_server_exceptions=False) as c:
            yield c, loaded, seqs, ws, users
    finally:
        state.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workspace, list[str], Sequences, Recommender]:
    run, ws, users = make_served_run(tmp_path_factory.mktemp("serving"))
    with EventStore.open(ws, read_only=True) as store:
        seqs = build_sequences(store.con)  # the store as the service will find it
    model, _ = load_run(run)
    return run, ws, users, seqs, model


@pytest.fixture
def client(served: tuple) -> Iterator[TestClient]:
    run, ws, *_ = served
    state = ServiceState.open(run, ws, ServiceConfig())
    try:
        with TestClient(create_app(state), raise_server_exceptions=False) as c:
            yield c
    finally:
        state.close()


def expected_top(model: Recommender, item_ids: list[str], seqs: Sequences, k: int,
                 filter_seen: bool = True) -> list[str]:
    """What the model itself recommends for this history (item ids, oldest first)."""
    idx = seqs.item_vocab.encode(item_ids).astype(np.int64)
    items, _ = model.recommend(Histories.from_lists([list(idx[idx > 0])], model.max_len), k, filter_seen)
    return list(seqs.item_vocab.decode(items[0]))


def user_item_ids(seqs: Sequences, store_pseudonym: str) -> list[str]:
    row = int(seqs.user_vocab.encode([store_pseudonym])[0])
    items, _, _ = seqs.user(row)
    return list(seqs.item_vocab.decode(items))


def pseudonym_of(ws: Workspace, raw: str) -> str:
    return PseudonymKey.load_or_create(ws.key_path).pseudonymise(raw)


def test_recommend_for_a_stored_user_matches_the_model(client: TestClient, served: tuple) -> None:
    _, ws, users, seqs, model = served
    for raw in users[:3]:
        r = client.post("/recommend", json={"user_id": raw, "k": 5, "include_history": True})
        assert r.status_code == 200, r.text
        body = r.json()
        pseudonym = pseudonym_of(ws, raw)
        assert body["user_pseudonym"] == pseudonym and body["known_user"] and not body["cold_start"]
        history = user_item_ids(seqs, pseudonym)
        assert [i["item_id"] for i in body["items"]] == expected_top(model, history, seqs, 5)
        assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        # metadata from the items table and the event categories
        assert all(i["category_path"] and i["brand"] and i["category"] for i in body["items"])
        assert [h["item_id"] for h in body["history"]] == history[-model.max_len:]
        assert not set(history[-model.max_len:]) & {i["item_id"] for i in body["items"]}  # seen filtered


def test_recommend_by_the_purchase_head(client: TestClient, served: tuple, tmp_path: Path) -> None:
    """``head: next_purchase`` ranks by the purchase head (with its pointer over the history) and
    matches the model; a model without that head says so with a 422."""
    refused = client.post("/recommend", json={"user_id": served[2][0], "head": "next_purchase"})
    assert refused.status_code == 422 and "no purchase head" in refused.text
    spec = {**TINY_SASREC, "features": {"event_types": True}, "aux": {"next_purchase": 0.5}}
    with client_of_new_run(tmp_path, spec) as (c, model, seqs, ws, users):
        assert model.has_purchase_head
        for raw in users[:3]:
            r = c.post("/recommend", json={"user_id": raw, "k": 5, "head": "next_purchase"})
            assert r.status_code == 200, r.text
            assert r.json()["head"] == "next_purchase"
            row = seqs.user_vocab.encode([pseudonym_of(ws, raw)]).astype(np.int64)
            hist = Histories.from_sequences(seqs, model.max_len, row)
            scores = model.score_purchase(hist)[0].clone()
            scores[hist.items[0][hist.items[0] > 0]] = -torch.inf  # seen items filtered
            scores[0] = -torch.inf
            expected = seqs.item_vocab.decode(torch.topk(scores, 5).indices.numpy())
            assert [i["item_id"] for i in r.json()["items"]] == list(expected)
            assert c.post("/recommend", json={"user_id": raw, "k": 5}).json()["head"] == "next_item"


def test_unknown_user_gets_recent_popular_items(client: TestClient) -> None:
    body = client.post("/recommend", json={"user_id": "never-seen-before", "k": 4}).json()
    assert body["cold_start"] and not body["known_user"] and body["history_length"] == 0
    con = client.app.state.service.store.con
    expected = con.execute(
        """SELECT item_id, count(*) AS n FROM events
        WHERE timestamp > (SELECT max(timestamp) FROM events) - 7 * 86400000 GROUP BY item_id"""
    ).fetchall()
    counts = dict(expected)
    assert [i["score"] for i in body["items"]] == sorted(counts.values(), reverse=True)[:4]
    assert all(counts[i["item_id"]] == i["score"] for i in body["items"])


def test_explicit_events_need_no_stored_history(client: TestClient, served: tuple) -> None:
    *_, seqs, model = served
    ids = list(seqs.item_vocab.decode(np.array([5, 9, 2, 14])))
    events = [{"item_id": i, "event_type": t} for i, t in zip(ids, ["view", "pv", "cart", "buy"], strict=True)]
    events.insert(2, {"item_id": "no-such-item"})
    body = client.post("/recommend", json={"events": events, "k": 6}).json()
    assert body["unknown_items"] == ["no-such-item"] and not body["cold_start"]
    assert body["history_length"] == 4 and body["user_pseudonym"] is None
    assert [i["item_id"] for i in body["items"]] == expected_top(model, ids, seqs, 6)
    bad = client.post("/recommend", json={"events": [{"item_id": ids[0], "event_type": "teleport"}]})
    assert bad.status_code == 422 and bad.json()["details"][0]["reason"] == "unknown_event_type"


def test_filters_on_categories_and_seen_items(client: TestClient, served: tuple) -> None:
    *_, seqs, model = served
    state: ServiceState = client.app.state.service
    category = state.catalog.categories()[0]
    ids = list(seqs.item_vocab.decode(np.array([3, 4, 5])))
    body = client.post("/recommend", json={"events": [{"item_id": i} for i in ids], "k": 5,
                                           "include_categories": [category]}).json()
    assert body["items"] and all(category in [i["category"], *(i["category_path"] or [])] for i in body["items"])
    body = client.post("/recommend", json={"events": [{"item_id": i} for i in ids], "k": 20,
                                           "exclude_categories": [category]}).json()
    assert all(category not in [i["category"], *(i["category_path"] or [])] for i in body["items"])
    kept = client.post("/recommend", json={"events": [{"item_id": i} for i in ids], "k": 100,
                                           "filter_seen": False}).json()
    assert [i["item_id"] for i in kept["items"]] == expected_top(model, ids, seqs, 100, filter_seen=False)
    assert len(set(ids) & {i["item_id"] for i in kept["items"]}) >= 2  # 100 of ~120 items: seen ones stay


def test_posted_events_are_cleaned_persisted_and_seen_at_once(served: tuple) -> None:
    run, ws, _, seqs, model = served
    ids = list(seqs.item_vocab.decode(np.array([7, 8, 11])))
    state = ServiceState.open(run, ws, ServiceConfig())
    try:
        with TestClient(create_app(state)) as c:
            before = c.post("/recommend", json={"user_id": "api-user-1", "k": 5}).json()
            assert before["cold_start"]
            events = [
                {"item_id": ids[0], "event_type": "PV", "timestamp": 1_700_000_000},  # seconds -> ms
                {"item_id": ids[1], "event_type": "add_to_cart", "timestamp": "2023-11-14T22:15:00Z"},
                {"item_id": ids[1], "event_type": "add_to_cart", "timestamp": "2023-11-14T22:15:00Z"},  # dup
                {"item_id": ids[2], "event_type": "teleport"},
                {"item_id": ids[2], "timestamp": "not a time"},
                {"item_id": ids[2], "event_type": "buy", "price": -3},
                {"item_id": "brand-new-item", "event_type": "view"},
                {"item_id": ids[2], "event_type": "buy"},
            ]
            r = c.post("/events", json={"user_id": "api-user-1", "events": events})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["accepted"] == 4 and out["duplicates"] == 1
            assert [(x["index"], x["reason"]) for x in out["rejected"]] == [
                (3, "unknown_event_type"), (4, "bad_timestamp"), (5, "bad_price")]
            after = c.post("/recommend", json={"user_id": "api-user-1", "k": 5, "include_history": True}).json()
            assert after["known_user"] and not after["cold_start"] and after["history_length"] == 3
            assert [h["item_id"] for h in after["history"]] == [ids[0], ids[1], "brand-new-item", ids[2]]
            assert [h["event_type"] for h in after["history"]][:2] == ["view", "cart"]
            assert after["history"][2]["known"] is False  # stored, shown, not read by the model
            assert [i["item_id"] for i in after["items"]] == expected_top(model, ids, seqs, 5)
            con = state.store.con
            assert con.execute("SELECT count(*) FROM events WHERE user_id = 'api-user-1'").fetchone()[0] == 0
            pseudonym = out["user_pseudonym"]
            stored = con.execute("SELECT timestamp FROM events WHERE user_id = ? ORDER BY timestamp",
                                 [pseudonym]).fetchall()
            assert stored[0][0] == 1_700_000_000_000 and len(stored) == 4
            assert con.execute("SELECT count(*) FROM rejects WHERE source_file = 'api:POST /events'"
                               ).fetchone()[0] == 3
            assert "api-user-1" not in json.dumps(con.execute("SELECT raw FROM rejects").fetchall())
            again = c.post("/events", json={"user_id": "api-user-1", "events": events[:2]}).json()
            assert again["accepted"] == 0 and again["duplicates"] == 2  # already in the store
    finally:
        state.close()
    # a new service reads them from the store, not from an overlay
    state = ServiceState.open(run, ws, ServiceConfig(read_only=True))
    try:
        with TestClient(create_app(state)) as c:
            body = c.post("/recommend", json={"user_id": "api-user-1", "k": 5}).json()
            assert body["known_user"] and body["history_length"] == 3
            refused = c.post("/events", json={"user_id": "api-user-1", "events": events[:1]})
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
    finally:
        state.close()


def test_explain_occlusion_is_the_real_score_drop(client: TestClient, served: tuple) -> None:
    *_, seqs, model = served
    ids = list(seqs.item_vocab.decode(np.array([12, 3, 30, 7, 19, 25])))
    r = client.post("/explain", json={"events": [{"item_id": i} for i in ids], "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["attention_available"] and len(body["explained"]) == 2
    idx = seqs.item_vocab.encode(ids).astype(np.int64)
    for explained in body["explained"]:
        target = int(seqs.item_vocab.encode([explained["item_id"]])[0])
        full = float(model.score(Histories.from_lists([list(idx)], model.max_len))[0, target])
        assert explained["score"] == pytest.approx(full, abs=1e-5)
        # each removal scored on its own, without the service's batching
        drops = np.array([full - float(model.score(Histories.from_lists([list(np.delete(idx, j))],
                                                                         model.max_len))[0, target])
                          for j in range(len(idx))])
        contributions = explained["contributions"]
        top = contributions[0]
        assert top["position"] == int(np.argmax(drops))
        assert top["occlusion"] == pytest.approx(drops.max(), abs=1e-5)
        # removing the top-attributed event lowers the item's score more than removing any other
        assert all(drops[top["position"]] > drops[c["position"]] for c in contributions[1:])
        assert sum(c["attention"] for c in contributions) == pytest.approx(1.0, abs=1e-5)


def test_attention_weights_reproduce_the_block_output(served: tuple) -> None:
    *_, model = served
    module = model.module
    block = module.blocks[-1]
    items = torch.tensor([[4, 9, 2, 7, 1]])
    captured: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        module.hidden_states(items)
        handle.remove()
        x = captured[-1]
        probs = attention_probs(block, x)
        h = block.norm1(x) if block.norm_first else x
        b, n, d = h.shape
        v = block.qkv(h).view(b, n, 3, block.heads, d // block.heads).permute(2, 0, 3, 1, 4)[2]
        rebuilt = block.proj((probs @ v).transpose(1, 2).reshape(b, n, d))
        assert torch.allclose(rebuilt, block.attention(h, None, causal=True), atol=1e-5)
    weights = last_position_attention(model, Histories.from_lists([[4, 9, 2, 7, 1]], model.max_len))
    assert weights is not None and weights.shape == (5,) and weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_bad_requests_get_clear_4xx(served: tuple) -> None:
    run, ws, *_ = served
    limits = {"max_k": 50, "max_events": 5, "max_body_bytes": 4096}
    state = ServiceState.open(run, ws, ServiceConfig(limits=limits))
    try:
        with TestClient(create_app(state), raise_server_exceptions=False) as c:
            cases = [
                (c.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}), 422),
                (c.post("/recommend", json={}), 422),
                (c.post("/recommend", json={"user_id": "a", "k": 0}), 422),
                (c.post("/recommend", json={"user_id": "a", "k": 51}), 422),
                (c.post("/recommend", json={"user_id": "a", "k": "ten"}), 422),
                (c.post("/recommend", json={"user_id": "a", "colour": "red"}), 422),
                (c.post("/recommend", json={"user_id": "a", "user_pseudonym": "b"}), 422),
                (c.post("/recommend", json={"events": [{"item_id": "x"}] * 6}), 422),
                (c.post("/recommend", json={"events": [{"item_id": ""}]}), 422),
                (c.post("/recommend", json={"user_id": "a", "events": [{"item_id": "x", "timestamp": -5}]}), 422),
                (c.post("/recommend", json={"user_id": "x" * 5000}), 413),
                (c.post("/recommend", content=(b"x" for _ in range(5000))), 413),  # chunked, no length
                (c.post("/events", json={"user_id": "a", "events": []}), 422),
                (c.post("/explain", json={"user_id": "nobody"}), 422),
                (c.get("/users/someone/profile"), 501),  # no profiles built for this run
                (c.get("/no/such/route"), 404),
                (c.get("/recommend"), 405),
            ]
            for response, status in cases:
                assert response.status_code == status, (response.request.url, response.text)
                body = response.json()
                assert body["error"] and "Traceback" not in response.text
            assert "k" in cases[3][0].json()["error"]
            assert c.get("/health").json()["status"] == "ok"
    finally:
        state.close()


def test_health_and_prometheus_metrics(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "sasrec" and health["users"] > 0
    for _ in range(3):
        client.post("/recommend", json={"user_id": "nobody", "k": 2})
    client.post("/recommend", json={})
    text = client.get("/metrics").text
    assert 'shopseq_http_requests_total{method="POST",route="/recommend",status="200"} 3' in text
    assert 'shopseq_http_requests_total{method="POST",route="/recommend",status="422"} 1' in text
    assert 'shopseq_http_request_duration_seconds_bucket{method="POST",route="/recommend",le="+Inf"} 4' in text
    assert 'shopseq_http_request_duration_seconds_count{method="POST",route="/recommend"} 4' in text
    assert client.get("/openapi.json").json()["paths"]["/recommend"]["post"]


def test_incompatible_run_directory_is_a_clear_error(served: tuple, tmp_path: Path) -> None:
    run, ws, *_ = served
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    meta = json.loads((old / "model" / "config.json").read_text())
    (old / "model" / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(IncompatibleModelError, match="format 99"):
        ServiceState.open(old, ws)
    result = CliRunner().invoke(cli_app, ["serve", str(old), "--workspace", str(ws.root)])
    assert result.exit_code == 2 and "Retrain it" in result.output


def test_recommend_all_users_streams_in_bounded_chunks(served: tuple, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from shopseq.cli import model_commands

    run, ws, _, _, model = served
    args = ["recommend", str(run), "--all-users", "-k", "3", "--workspace", str(ws.root)]
    whole = tmp_path / "whole.parquet"
    assert CliRunner().invoke(cli_app, [*args, "--out", str(whole)]).exit_code == 0
    # a score budget of ~7 rows forces many chunks, each written as it is done
    monkeypatch.setattr(model_commands, "SCORE_BUDGET_BYTES", 7 * 4 * (model.n_items + 1))
    chunked = tmp_path / "chunked.parquet"
    result = CliRunner().invoke(cli_app, [*args, "--out", str(chunked)])
    assert result.exit_code == 0, result.output
    assert pq.ParquetFile(chunked).metadata.num_row_groups > 10
    a, b = pq.read_table(chunked), pq.read_table(whole)
    assert a.column("user_id").equals(b.column("user_id")) and a.column("rank").equals(b.column("rank"))
    # other chunk sizes take other matmul blockings: scores agree to float rounding, and items may
    # swap only where two scores are that close (a near-tie)
    sa, sb = a.column("score").to_numpy(), b.column("score").to_numpy()
    np.testing.assert_allclose(sa, sb, atol=1e-5, rtol=0)
    differ = np.flatnonzero(a.column("item_id").to_numpy(zero_copy_only=False)
                            != b.column("item_id").to_numpy(zero_copy_only=False))
    gaps = np.abs(np.diff(sb))
    near_tie = np.minimum(np.r_[gaps, np.inf][differ], np.r_[np.inf, gaps][differ]) < 1e-5
    assert near_tie.all(), differ[~near_tie][:10]


def test_micro_batcher_scores_concurrent_requests_together() -> None:
    calls: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        calls.append(items)
        if 13 in items:
            raise ValueError("unlucky")
        return [i * i for i in items]

    async def main() -> None:
        batcher = MicroBatcher(square, max_batch=4)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [i * i for i in range(10)]
        assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # queued while idle: full batches
        results = await asyncio.gather(batcher.submit(13), batcher.submit(2), return_exceptions=True)
        assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)  # same batch
        assert await batcher.submit(3) == 9  # the worker survives a failed batch
        assert (batcher.batches, batcher.items) == (4, 11)

    asyncio.run(main())


def test_concurrent_http_requests_match_one_at_a_time(served: tuple) -> None:
    run, ws, users, _, _ = served
    bodies = [{"user_id": u, "k": 5, "filter_seen": i % 2 == 0,
               **({"exclude_categories": ["Home"]} if i % 3 == 0 else {})} for i, u in enumerate(users[:24])]
    with running_service(run, ws, ServiceConfig(read_only=True)) as url:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda b: httpx.post(f"{url}/recommend", json=b, timeout=30).json(), bodies))
        sequential = [httpx.post(f"{url}/recommend", json=b, timeout=30).json() for b in bodies]
        metrics = httpx.get(f"{url}/metrics").text
    for together, alone in zip(answers, sequential, strict=True):
        assert [i["item_id"] for i in together["items"]] == [i["item_id"] for i in alone["items"]]
        assert [i["score"] for i in together["items"]] == pytest.approx([i["score"] for i in alone["items"]],
                                                                         abs=1e-5)
    assert "shopseq_scored_requests 48" in metrics


def test_leave_one_out_drops_the_same_event_from_every_feature() -> None:
    one = Histories(np.array([[0, 7, 8, 9]]), np.array([[0, 1, 2, 3]]), np.array([[0, 10, 20, 30]]), np.array([3]))
    rows = leave_one_out_histories(one)
    assert rows.lengths.tolist() == [3, 2, 2, 2]
    assert rows.items.tolist() == [[7, 8, 9], [0, 8, 9], [0, 7, 9], [0, 7, 8]]
    assert rows.types.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert rows.timestamps.tolist() == [[10, 20, 30], [0, 20, 30], [0, 10, 30], [0, 10, 20]]


def test_query_once_starts_answers_and_stops(served: tuple) -> None:
    run, ws, users, _, _ = served
    out = query_once(run, ws.root, user_id=users[1], k=3, explain=True, config=ServiceConfig(read_only=True))
    assert out["health"]["status"] == "ok" and len(out["recommend"]["items"]) == 3
    assert out["recommend"]["history"] and out["explain"]["explained"]
    with pytest.raises(httpx.HTTPError):  # stopped
        httpx.get(f"{out['url']}/health", timeout=2)


def test_profiles_are_served_when_built(served: tuple, tmp_path: Path) -> None:
    from shopseq.applications.profiles import Profiles

    run, ws, users, _, _ = served
    pseudonym = pseudonym_of(ws, users[0])
    table = pa.table({"user_id": [pseudonym], "segment": [2], "monetary": [float("nan")],
                      "vector": [[0.5, -0.5]], "top_categories": [[{"name": "Pets", "affinity": 0.7}]]})
    path = Profiles(table, {"segments": [{"segment": 2, "description": "restocks pet food"}]}).save(
        tmp_path / "profiles.parquet")
    state = ServiceState.open(run, ws, ServiceConfig(read_only=True, profiles=path))
    try:
        with TestClient(create_app(state)) as c:
            body = c.get(f"/users/{users[0]}/profile").json()
            assert body["segment"] == 2 and body["segment_description"] == "restocks pet food"
            assert body["monetary"] is None and "vector" not in body  # NaN -> null; vector on request
            assert body["top_categories"] == [{"name": "Pets", "affinity": pytest.approx(0.7)}]
            by_pseudonym = c.get(f"/users/{pseudonym}/profile", params={"pseudonymised": True,
                                                                          "include_vector": True}).json()
            assert by_pseudonym["vector"] == [0.5, -0.5]
            missing = c.get("/users/someone-else/profile")
            assert missing.status_code == 404 and "no profile" in missing.json()["error"]
            assert c.get("/health").json()["profiles"] is True
    finally:
        state.close()
    with pytest.raises(FileNotFoundError, match="shopseq profile"):
        ServiceState.open(run, ws, ServiceConfig(read_only=True, profiles=tmp_path / "missing.parquet"))


def test_a_blend_is_served_like_any_model(tmp_path: Path) -> None:
    """A mixture (tiny SASRec + item-kNN) answers /recommend with the blend's own ranking and
    /explain by occlusion (it has no attention of its own)."""
    spec = {"model": "blend", "members": [TINY_SASREC, {"model": "itemknn"}], "weights": [0.5, 0.5]}
    with client_of_new_run(tmp_path, spec) as (c, model, seqs, ws, users):
        for raw in users[:3]:
            r = c.post("/recommend", json={"user_id": raw, "k": 5})
            assert r.status_code == 200, r.text
            history = user_item_ids(seqs, pseudonym_of(ws, raw))
            assert [i["item_id"] for i in r.json()["items"]] == expected_top(model, history, seqs, 5)
        r = c.post("/explain", json={"user_id": users[0], "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["explained"]) == 3 and not body["attention_available"]
        assert all(e["contributions"] for e in body["explained"])
