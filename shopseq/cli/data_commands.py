"""Commands on the event store: ingest, stats, rejects, export, forget."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.status import Status
from rich.table import Table

from shopseq.cli.common import WorkspaceOpt, console, friendly_errors, kv_table, open_store
from shopseq.data.cleaning import CleaningPolicy
from shopseq.data.formats import FORMATS
from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
from shopseq.data.ingest import IngestReport, ingest_file
from shopseq.data.stats import compute_stats
from shopseq.data.store import EventStore

_FORMAT_HELP = "Source format: " + "; ".join(f"{name} ({info.description})" for name, info in FORMATS.items())


def step_reporter(status: Status, label: object) -> Callable[[str], None]:
    """Show an ingest's current step on a spinner line."""
    return lambda step: status.update(f"{label}: {step}")


def print_ingest_report(report: IngestReport) -> None:
    if report.skipped:
        console.print(
            f"[yellow]{report.source_file}[/]: already ingested as batch {report.batch_id}; nothing added."
        )
        return
    rows = [
        ("rows read", f"{report.rows_in:,}"),
        ("accepted", f"{report.accepted:,}  ({report.users:,} users, {report.items:,} items)"),
        ("duplicates dropped",
         f"{report.duplicates_in_file:,} in file · {report.duplicates_in_store:,} already stored"),
        ("rejected", f"{report.rejected_total:,}"),
    ]
    rows += [(f"  {reason}", f"{n:,}") for reason, n in report.rejected.items()]
    if report.items_with_attributes:
        rows.append(("item attributes", f"{report.items_with_attributes:,} items"))
    if report.rejects_file:
        rows.append(("rejected rows kept in", report.rejects_file))
    rows.append(("time", f"{report.seconds:.2f} s ({report.rows_in / max(report.seconds, 1e-9):,.0f} rows/s)"))
    console.print(kv_table(f"ingest batch {report.batch_id}: {report.source_file} [{report.format}]", rows))


@friendly_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files to ingest (gzip is read transparently).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=_FORMAT_HELP)] = "csv",
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", "-m", help="FIELD=COLUMN, e.g. --map user_id=customer --map timestamp=ts. "
                     "Fields: user_id item_id timestamp event_type session_id category price quantity."),
    ] = None,
    event_map: Annotated[
        list[str] | None, typer.Option("--event-map", "-e", help="SOURCE_NAME=TYPE, e.g. -e pv=view -e buy=purchase.")
    ] = None,
    timestamp_unit: Annotated[
        TimestampUnit, typer.Option(help="Unit of numeric timestamps; auto guesses by magnitude.")
    ] = TimestampUnit.AUTO,
    delimiter: Annotated[str | None, typer.Option(help="Field delimiter for csv/tsv (default , or tab).")] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="The file has no header line.")] = False,
    columns: Annotated[str | None, typer.Option(help="Comma-separated column names for a file without header.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding: utf-8, latin-1 or utf-16.")] = "utf-8",
    default_event_type: Annotated[
        str, typer.Option(help="Type for rows without an event type, or 'reject' to reject them.")
    ] = "view",
    kcore: Annotated[
        int | None, typer.Option(help="Keep only users and items with at least K events (iterated).")
    ] = None,
    null_invalid_optional: Annotated[
        bool,
        typer.Option("--null-invalid-optional", help="Null an unparsable price/quantity instead of rejecting the row."),
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Read, clean and store behaviour events; print accepted and rejected counts by reason.

    Every rejected row is kept (table `rejects` and a CSV under the workspace's rejects/) with its
    reason, field, file and line. Re-ingesting the same file adds nothing.

    Examples:

      shopseq ingest events.csv --map user_id=customer --map item_id=sku --map timestamp=ts

      shopseq ingest UserBehavior.csv.gz --format taobao

      shopseq ingest Beauty.txt.gz --format s3rec
    """
    options = ReadOptions(
        mapping=ColumnMapping.from_pairs(mapping or []),
        delimiter=delimiter,
        header=not no_header,
        column_names=[c.strip() for c in columns.split(",")] if columns else None,
        encoding=encoding,
        timestamp_unit=timestamp_unit,
    )
    policy = CleaningPolicy(
        default_event_type=None if default_event_type == "reject" else default_event_type,
        kcore=kcore,
        invalid_optional="null" if null_invalid_optional else "reject",
    ).with_aliases(event_map or [])
    with open_store(workspace) as store:
        for path in paths:
            with console.status(f"ingesting {path}") as status:
                report = ingest_file(store, path, fmt, options, policy, on_step=step_reporter(status, path))
            print_ingest_report(report)


@friendly_errors
def stats(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Users, items, events (per type), sequence lengths, time range and density of the store."""
    with open_store(workspace, read_only=True) as store:
        result = compute_stats(store)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        console.print(kv_table("event store", result.rows()))


@friendly_errors
def rejects(
    batch: Annotated[int | None, typer.Option(help="Only this ingest batch.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    workspace: WorkspaceOpt = None,
) -> None:
    """Show rejected rows with their reason, field, source file and line."""
    with open_store(workspace, read_only=True) as store:
        rows = store.rejects(batch, limit).to_pylist()
        total = store.count("rejects")
    table = Table(title=f"rejected rows ({total:,} in all; showing {len(rows)})", title_justify="left")
    for col in ("batch", "file", "line", "reason", "field", "raw"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["batch_id"]), Path(r["source_file"]).name, str(r["src_row"]), r["reason"],
                      r["field"] or "", (r["raw"] or "")[:120])
    console.print(table)


@friendly_errors
def export(
    out: Annotated[Path, typer.Argument(help="Parquet file to write (atomically).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Export all events to Parquet (pseudonymised ids, ms timestamps, event type names).

    `shopseq ingest OUT --format parquet` in a workspace with the same key restores them exactly.
    """
    with open_store(workspace, read_only=True) as store:
        n = store.export_parquet(out)
    console.print(f"wrote {n:,} events to {out}")


@friendly_errors
def forget(
    user: Annotated[str, typer.Argument(help="The user's id as it appeared in the source data.")],
    pseudonymised: Annotated[bool, typer.Option(help="USER is already the stored pseudonym.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Delete one user's events and rejected rows from the store, and the user from what the
    workspace derived from them: the sequence cache and the Parquet files under apps/ (profiles).
    A running service forgets too with DELETE /users/USER (needs its API key)."""
    with open_store(workspace) as store:
        n = store.forget(user, already_pseudonymised=pseudonymised)
        purged = store.last_purged
    console.print(f"deleted {n:,} events" + ("" if n else " (no such user in the store)"))
    if purged:
        console.print(f"removed the user from {len(purged)} derived file(s) and cache folder(s):")
        for path in purged:
            console.print(f"  {path}")


@friendly_errors
def batches(workspace: WorkspaceOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List ingest batches: file, format, rows in, accepted, rejected, duplicates."""
    with open_store(workspace, read_only=True) as store:
        rows = store.batches().to_pylist()
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="ingest batches", title_justify="left")
    for col in ("batch", "file", "format", "rows in", "accepted", "rejected", "duplicates", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["batch_id"]), r["source_file"], r["format"], f"{r['rows_in']:,}", f"{r['accepted']:,}",
                      f"{r['rejected']:,}", f"{r['duplicates']:,}", f"{r['seconds'] or 0:.2f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    for command in (ingest, stats, rejects, batches, export, forget):
        app.command()(command)


__all__ = ["EventStore", "register"]
