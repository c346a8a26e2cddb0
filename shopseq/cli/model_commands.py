"""Commands on models: train, evaluate, compare, recommend."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.table import Table

from shopseq.atomic import write_file, write_text
from shopseq.cli.common import WorkspaceOpt, console, friendly_errors, open_store
from shopseq.cli.sequence_commands import load_sequences
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.vocab import Vocabulary
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models.base import Histories
from shopseq.models.registry import model_names
from shopseq.reports.html import HtmlReport
from shopseq.runs.experiment import ExperimentConfig, SplitConfig, load_run, run_experiment

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Model setting KEY=VALUE (JSON values), e.g. -s hidden=128 -s train.epochs=50."),
]


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``a=1``, ``train.lr=0.001`` -> nested dict with JSON-decoded values (plain text otherwise)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"bad setting {pair!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _data_info(store: Any, seqs: Sequences) -> dict[str, Any]:
    return {
        "workspace": str(store.workspace.root),
        "store_version": store.version,
        "users": seqs.n_users,
        "items": seqs.n_items,
        "events": seqs.n_events,
    }


def print_metrics_table(title: str, rows: dict[str, dict[str, float]], keys: list[str]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics.get(k, float('nan')):.4f}" for k in keys))
    console.print(table)


HEADLINE = ["ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr", "coverage@10"]


@friendly_errors
def train(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name: sasrec, bert4rec, gru4rec, pop, markov, ...")
    ] = "sasrec",
    split: Annotated[
        str, typer.Option(help="time (global time split) or loo (leave-one-out, for paper tables).")
    ] = "time",
    out: Annotated[Path | None, typer.Option(help="Run directory (default: <workspace>/runs/<model>-<split>).")] = None,
    settings: SetOpt = None,
    no_filter_seen: Annotated[
        bool, typer.Option("--no-filter-seen", help="Keep already-seen items in the ranking.")
    ] = False,
    baselines: Annotated[
        str, typer.Option(help="Comma-separated baselines evaluated beside the model.")
    ] = "pop,markov",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train a model on the workspace's events, evaluate it with full ranking, write a run directory
    (config.json, model/, vocab/, metrics.json, train_log.csv, report.html).

    Example: shopseq train --model sasrec --split loo -s train.epochs=200
    """
    with open_store(workspace, read_only=True) as store:
        seqs, _ = load_sequences(store)
        info = _data_info(store, seqs)
        run_dir = out or store.workspace.root / "runs" / f"{model}-{split}"
    config = ExperimentConfig(
        model={"model": model, **parse_settings(settings)},
        split=SplitConfig(method=split),
        eval=EvalConfig(filter_seen=not no_filter_seen),
        baselines=[b for b in baselines.split(",") if b],
        seed=seed,
    )
    result = run_experiment(seqs, config, run_dir, info, log=console.print, resume=resume)
    if result is None:  # a torchrun rank other than 0: rank 0 evaluates and reports
        return
    print_metrics_table(result.protocol, {model: result.test, **result.baselines}, HEADLINE)
    console.print(f"train {result.train_seconds:.1f} s · evaluation {result.eval_seconds:.2f} s · run: {run_dir}")


def _sequences_for_run(store: Any, run_dir: Path) -> Sequences:
    """The store's sequences encoded with the run's own vocabularies (ids unknown to it dropped)."""
    items = Vocabulary.load(run_dir / "vocab" / "items.parquet")
    users = Vocabulary.load(run_dir / "vocab" / "users.parquet")
    return build_sequences(store.con, user_vocab=users, item_vocab=items)


@friendly_errors
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `shopseq train`.")],
    split: Annotated[str | None, typer.Option(help="Split to evaluate on (default: the run's own).")] = None,
    ks: Annotated[str, typer.Option(help="Comma-separated cut-offs.")] = "10,20",
    no_filter_seen: Annotated[
        bool, typer.Option("--no-filter-seen", help="Keep already-seen items in the ranking.")
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Full-ranking evaluation of a trained run on the workspace's current data."""
    model, meta = load_run(run_dir)
    split_cfg = SplitConfig(**{**meta["experiment"]["split"], **({"method": split} if split else {})})
    with open_store(workspace, read_only=True) as store:
        seqs = _sequences_for_run(store, run_dir)
    folds = split_cfg.make(seqs)
    config = EvalConfig(ks=tuple(int(k) for k in ks.split(",")), filter_seen=not no_filter_seen)
    result = evaluate(model, folds.test, config)
    console.print(result.describe())


@friendly_errors
def compare(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "sasrec,gru4rec,markov,pop",
    split: Annotated[str, typer.Option(help="time or loo.")] = "time",
    settings: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for runs and compare.html (default <workspace>/compare).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train and evaluate several models on one split; print a table and write compare.html."""
    with open_store(workspace, read_only=True) as store:
        seqs, _ = load_sequences(store)
        info = _data_info(store, seqs)
        folder = out or store.workspace.root / "compare"
    rows: dict[str, dict[str, float]] = {}
    protocol = ""
    for name in [m for m in models.split(",") if m]:
        console.rule(name)
        config = ExperimentConfig(
            model={"model": name, **parse_settings(settings)}, split=SplitConfig(method=split), baselines=[], seed=seed
        )
        started = time.perf_counter()
        result = run_experiment(seqs, config, folder / f"{name}-{split}", info, log=console.print)
        if result is None:  # a torchrun rank other than 0
            continue
        rows[name] = {
            **result.test,
            "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - started,
        }
        protocol = result.protocol
    if not rows:  # torchrun ranks other than 0 have nothing to report
        return
    print_metrics_table(f"comparison ({protocol})", rows, HEADLINE)
    report = HtmlReport(f"shopseq compare ({split} split)").paragraph(protocol, note=True)
    report.table([{"model": k, **v} for k, v in rows.items()])
    keys = [k for k in HEADLINE if k != "coverage@10"]
    report.bar_plot("test metrics", keys, {k: [v.get(m, 0.0) for m in keys] for k, v in rows.items()})
    path = folder / "compare.html"
    write_text(path, report.render())
    console.print(f"report: {path}")


# the (rows, n_items + 1) float32 score matrix of one chunk stays under this many bytes
SCORE_BUDGET_BYTES = 256 << 20


def rows_per_chunk(n_items: int, budget: int | None = None) -> int:
    budget = SCORE_BUDGET_BYTES if budget is None else budget
    return int(max(1, min(4096, budget // (4 * (n_items + 1)))))


def _no_recommendations() -> pa.Table:
    return pa.table({"user_id": pa.array([], pa.string()), "rank": pa.array([], pa.int64()),
                     "item_id": pa.array([], pa.string()), "score": pa.array([], pa.float32())})


def _recommendation_table(model: Any, seqs: Sequences, chunk: np.ndarray, k: int, filter_seen: bool) -> pa.Table:
    items, scores = model.recommend(Histories.from_sequences(seqs, model.max_len, chunk), k, filter_seen)
    return pa.table({
        "user_id": pa.array(np.repeat(seqs.user_vocab.decode(chunk), items.shape[1]), pa.string()),
        "rank": pa.array(np.tile(np.arange(1, items.shape[1] + 1), len(chunk)), pa.int64()),
        "item_id": pa.array(seqs.item_vocab.decode(items.ravel()), pa.string()),
        "score": pa.array(scores.ravel().astype(np.float32), pa.float32()),
    })


def _write_streaming(tables: Iterable[pa.Table], out: Path) -> int:
    """One row group per chunk, written as it comes: memory stays one chunk, whatever the user count.
    The file appears at ``out`` only when complete."""
    written = 0

    def write(path: Path) -> None:
        nonlocal written
        writer: pq.ParquetWriter | None = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                written += table.num_rows
            if writer is None:  # no users: an empty file with the schema
                pq.write_table(_no_recommendations(), path)
        finally:
            if writer is not None:
                writer.close()

    write_file(out, write)
    return written


@friendly_errors
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `shopseq train`.")],
    users: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="User id as in the source data (repeatable).")
    ] = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="Every user in the store.")] = False,
    k: Annotated[int, typer.Option("-k", "--k", help="How many items per user.")] = 10,
    no_filter_seen: Annotated[bool, typer.Option("--no-filter-seen", help="Allow items the user has seen.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write Parquet here instead of printing.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Top-k items for given users (from their stored history), to stdout or Parquet."""
    model, _ = load_run(run_dir)
    with open_store(workspace, read_only=True) as store:
        seqs = _sequences_for_run(store, run_dir)
        if all_users:
            rows = np.arange(seqs.n_users)
        else:
            if not users:
                raise ValueError("name users with --user, or pass --all-users")
            pseudonyms = [store.key.pseudonymise(u) for u in users]
            rows = seqs.user_vocab.encode(pseudonyms)
            unknown = [u for u, r in zip(users, rows, strict=True) if r < 0]
            if unknown:
                console.print(f"[yellow]unknown users (no history; skipped):[/] {', '.join(unknown)}")
            rows = rows[rows >= 0]
    step = rows_per_chunk(model.n_items)
    chunks = (_recommendation_table(model, seqs, rows[start : start + step], k, not no_filter_seen)
              for start in range(0, len(rows), step))
    if out:
        written = _write_streaming(chunks, out)
        console.print(f"wrote {written:,} recommendations to {out}")
        return
    tables = list(chunks)
    result = pa.concat_tables(tables) if tables else _no_recommendations()
    table = Table(title=f"top-{k} recommendations", title_justify="left")
    for col in ("user (pseudonym)", "rank", "item", "score"):
        table.add_column(col)
    for r in result.to_pylist():
        table.add_row(str(r["user_id"]), str(r["rank"]), str(r["item_id"]), f"{r['score']:.4f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command("evaluate")(evaluate_cmd)
    app.command()(compare)
    app.command()(recommend)


__all__ = ["model_names", "register"]
