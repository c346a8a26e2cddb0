"""The built-in synthetic shop: ``generate`` writes one, ``demo`` runs the whole pipeline on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
import typer

from shopseq.applications.summary import run_all
from shopseq.cli.common import WorkspaceOpt, console, friendly_errors, kv_table, open_store
from shopseq.cli.data_commands import print_ingest_report, step_reporter
from shopseq.cli.model_commands import HEADLINE, print_metrics_table
from shopseq.cli.sequence_commands import SplitMethod, load_sequences, make_split
from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
from shopseq.data.ingest import ingest_file
from shopseq.data.stats import compute_stats
from shopseq.data.store import upsert_items
from shopseq.evaluation import EvalConfig
from shopseq.runs.experiment import ExperimentConfig, SplitConfig, run_experiment
from shopseq.serving.client import query_once
from shopseq.serving.state import ServiceConfig
from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

NEURAL = ("sasrec", "bert4rec", "gru4rec")

# the synthetic shop writes canonical column names, timestamps in ms
SYNTHETIC_OPTIONS = ReadOptions(
    mapping=ColumnMapping(session_id="session_id", category="category", price="price", quantity="quantity"),
    timestamp_unit=TimestampUnit.MILLISECONDS,
)


@friendly_errors
def generate(
    out: Annotated[Path, typer.Argument(help="Folder to write the Parquet tables into.")],
    users: Annotated[int, typer.Option(help="Number of shoppers.")] = 20_000,
    items: Annotated[int, typer.Option(help="Catalogue size.")] = 5_000,
    days: Annotated[int, typer.Option(help="Length of the log in days.")] = 91,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same shop.")] = 0,
) -> None:
    """Generate a synthetic shop: events, catalogue, planted user types, campaigns with ground truth."""
    config = SyntheticShopConfig(n_users=users, n_items=items, days=days, seed=seed)
    with console.status("generating the synthetic shop"):
        shop = generate_shop(config)
        write_shop(shop, out)
    console.print(f"wrote {shop.events.num_rows:,} events, {shop.items.num_rows:,} items to {out}")


@friendly_errors
def demo(
    users: Annotated[int, typer.Option(help="Number of shoppers in the synthetic shop.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic shop.")] = 0,
    model: Annotated[str, typer.Option(help="Model to train: sasrec, bert4rec, gru4rec or a baseline.")] = "sasrec",
    epochs: Annotated[int, typer.Option(help="Upper bound on training epochs (early stopping ends sooner).")] = 15,
    workspace: WorkspaceOpt = None,
) -> None:
    """The main job, end to end on the built-in synthetic shop: generate -> ingest -> clean -> stats
    -> encode -> split -> train -> evaluate against baselines. Safe to re-run: an ingested file is
    recognised and not added twice."""
    started = time.perf_counter()
    with open_store(workspace) as store:
        shop_dir = store.workspace.root / "synthetic" / f"seed-{seed}-users-{users}"
        console.rule("1. generate the synthetic shop")
        events_file = shop_dir / "events.parquet"
        if not events_file.exists():
            with console.status("generating"):
                shop = generate_shop(SyntheticShopConfig(n_users=users, seed=seed))
                write_shop(shop, shop_dir)
        console.print(f"{pq.ParquetFile(events_file).metadata.num_rows:,} events in {shop_dir}")

        console.rule("2. ingest and clean")
        with console.status("ingesting") as status:
            report = ingest_file(store, events_file, "parquet", SYNTHETIC_OPTIONS,
                                 on_step=step_reporter(status, "ingesting"))
        print_ingest_report(report)
        n_items = upsert_items(store, pq.read_table(shop_dir / "items.parquet"))
        console.print(f"item attributes: {n_items:,} items (category path, brand, price)")

        console.rule("3. statistics")
        console.print(kv_table("event store", compute_stats(store).rows()))

        console.rule("4. encode sequences")
        t0 = time.perf_counter()
        seqs, hit = load_sequences(store)
        console.print(
            f"{seqs.n_users:,} users · {seqs.n_items:,} items · {seqs.n_events:,} events "
            f"({'from cache' if hit else 'built'} in {time.perf_counter() - t0:.2f} s)"
        )

    console.rule("5. split (global time split)")
    console.print(make_split(seqs, SplitMethod.time)[0].describe())

    console.rule(f"6. train {model} and compare with the baselines")
    config = ExperimentConfig(
        model={"model": model, **({"train": {"epochs": epochs}} if model in NEURAL else {})},
        split=SplitConfig(method="time"),
        # a shop's next event is often an item seen before (re-views, restocks): keep seen items
        eval=EvalConfig(filter_seen=False),
        baselines=["pop", "markov", "itemknn", "repeat"],
        seed=seed,
    )
    run_dir = store.workspace.root / "runs" / f"demo-{model}"
    result = run_experiment(seqs, config, run_dir, {"dataset": "synthetic shop", "seed": seed}, log=console.print)
    print_metrics_table(f"test ({result.protocol})", {model: result.test, **result.baselines}, HEADLINE)
    console.print(f"run directory with report.html: {run_dir}")

    console.rule("7. shop applications: profiles, segments, intent, promotion, forecast, churn")
    apps_dir = store.workspace.root / "apps" / run_dir.name
    with open_store(workspace, read_only=True) as store, console.status("profiling users and back-testing"):
        summary = run_all(store, run_dir, truth_dir=shop_dir, quick=True, out_dir=apps_dir)
    console.print(summary.render())
    console.print(f"every back-test with its plots: {apps_dir / 'report.html'} (profiles.parquet and segments.html "
                  "beside it)")

    console.rule("8. serve: start the HTTP service, ask it once, stop it")
    user = str(pq.read_table(events_file, columns=["user_id"]).column("user_id")[0])
    answer = query_once(run_dir, workspace, user_id=user, k=5, explain=True,
                        config=ServiceConfig(read_only=True, profiles=apps_dir / "profiles.parquet"))
    print_service_answer(answer, user)
    console.print(f"serve it yourself: shopseq serve {run_dir}  (then open the printed URL)")
    console.rule()
    console.print(f"[bold green]done[/] in {time.perf_counter() - started:.1f} s; workspace: {store.workspace.root}")


def print_service_answer(answer: dict[str, Any], user: str) -> None:
    """The demo's one request to the service, in a few readable lines."""
    rec = answer["recommend"]
    if "items" not in rec:
        console.print(f"[red]the service answered with an error[/]: {rec}")
        return
    console.print(f"{answer['url']} · health: {answer['health'].get('status', answer['health'])}")
    console.print(f"POST /recommend for user {user!r} ({rec['history_length']} recent events read by {rec['model']}):")
    for r in rec["items"]:
        where = " > ".join(r.get("category_path") or [r.get("category") or "?"])
        price = f", {r['price']:.2f}" if r.get("price") is not None else ""
        brand = r.get("brand") or "-"
        console.print(f"  {r['rank']}. {r['item_id']}  score {r['score']:.3f}  ({where}, {brand}{price})")
    history = {h["position"]: h for h in (answer.get("explain") or {}).get("history", [])}
    for item in (answer.get("explain") or {}).get("explained", [])[:1]:
        top = item["contributions"][:3]
        drivers = ", ".join(f"{c['item_id']} ({history.get(c['position'], {}).get('event_type', '?')}, "
                            f"{c['occlusion']:+.3f})" for c in top)
        console.print(f"POST /explain: {item['item_id']} is driven most by {drivers}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
    app.command()(generate)
